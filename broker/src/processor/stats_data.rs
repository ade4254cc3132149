//! VIEW_BROKER_STATS_DATA (315): one of RocketMQ's stats items (`statsName`, `statsKey`: a topic,
//! `topic@group`, or the cluster name for the broker's own) over the last minute, hour and
//! day, as `BrokerStatsData` (`sum`, `tps`, `avgpt` each). The items live in each shard's meter
//! (`stats::windows`); a broker answers with its shards' added up (with a broker per shard,
//! its own).

use thruster_protocol::body::admin::{BrokerStatsData, BrokerStatsItem};
use thruster_protocol::body::encode;
use thruster_protocol::header::admin::ViewBrokerStatsDataRequestHeader;
use thruster_protocol::{response_code, RemotingCommand};

use super::{BrokerProcessor, Handled};
use crate::remoting::Failure;
use crate::runtime;
use crate::shard::{Call, CallReply, Shard};
use crate::stats::windows::{ItemFigures, Lookup, WindowFigures};

pub async fn view(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: ViewBrokerStatsDataRequestHeader = request.decode_header()?;
    let shard = &processor.shard;
    let mut total: Option<ItemFigures> = None;
    for to in shard.broker_shards() {
        let call = Call::StatsItem {
            name: header.stats_name.clone(),
            key: header.stats_key.clone(),
        };
        match shard.call(processor, to, call).await {
            CallReply::StatsItem(Some(figures)) => {
                let sum = total.get_or_insert_with(ItemFigures::default);
                for (mine, theirs) in sum.iter_mut().zip(figures) {
                    mine.add(theirs);
                }
            }
            CallReply::StatsItem(None) => {}
            _ => {
                return Err(Failure::new(
                    response_code::SERVICE_NOT_AVAILABLE,
                    format!("shard {to} is not available"),
                ))
            }
        }
    }
    // Java's answer for a name it does not keep and for a key nobody counted yet.
    let [minute, hour, day] = total.ok_or_else(|| {
        Failure::system(format!(
            "The stats <{}> <{}> not exist",
            header.stats_name, header.stats_key
        ))
    })?;
    let data = BrokerStatsData {
        stats_day: item(day),
        stats_hour: item(hour),
        stats_minute: item(minute),
    };
    Ok(request.success().with_body(encode(&data)).into())
}

fn item(figures: WindowFigures) -> BrokerStatsItem {
    BrokerStatsItem {
        avgpt: figures.avgpt(),
        sum: figures.sum,
        tps: figures.tps,
    }
}

/// This shard's item, if it has it (the broker's own are keyed by the cluster name).
pub fn item_here(shard: &Shard, name: &str, key: &str) -> Option<ItemFigures> {
    let lookup = Lookup::of(name, key)?;
    let broker_wide = matches!(lookup, Lookup::BrokerPut | Lookup::BrokerGet);
    if broker_wide && key != shard.config.broker_cluster_name {
        return None;
    }
    shard.meter.borrow().stats_item(lookup, runtime::now_ms())
}
