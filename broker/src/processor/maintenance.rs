//! DELETE_EXPIRED_COMMITLOG (329) and CLEAN_EXPIRED_CONSUMEQUEUE (306): a retention pass now, on
//! every shard of the broker, deleting the expired CommitLog segments (`fileReservedTime`)
//! whatever `deleteWhen` says, and the ConsumeQueue and index files below the new log start,
//! as Java's `executeDeleteFilesManually` / `cleanExpiredConsumerQueue` do.

use thruster_protocol::{response_code, RemotingCommand};
use tracing::info;

use super::{BrokerProcessor, Handled};
use crate::remoting::Failure;
use crate::runtime;
use crate::shard::{Call, CallReply, Shard};

/// This shard's side.
pub async fn delete_expired_here(shard: &Shard) -> Result<(), Failure> {
    let before = shard.store.commit_log_min_offset();
    shard
        .store
        .delete_expired_now(runtime::now_ms())
        .await
        .map_err(|e| Failure::system(format!("deleting expired files: {e}")))?;
    info!(
        shard = shard.id,
        before,
        after = shard.store.commit_log_min_offset(),
        "expired files deleted on request"
    );
    Ok(())
}

pub async fn delete_expired(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let shard = &processor.shard;
    for to in shard.broker_shards() {
        match shard.call(processor, to, Call::DeleteExpiredFiles).await {
            CallReply::Done(Ok(())) => {}
            CallReply::Done(Err(failure)) => return Err(failure),
            _ => {
                return Err(Failure::new(
                    response_code::SERVICE_NOT_AVAILABLE,
                    format!("shard {to} is not available"),
                ))
            }
        }
    }
    Ok(request.success().into())
}
