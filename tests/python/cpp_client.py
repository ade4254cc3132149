"""Drives the Apache RocketMQ C++ client 2.x (bundled by PyPI `rocketmq` 0.4.4) for
Thruster's integration tests. Every event is one JSON line on stdout, so the Rust test reads
exactly what the unchanged client saw.

  produce NAMESRV TOPIC MODE COUNT PREFIX   MODE: sync | async | oneway | orderly | each-queue | batch
  push NAMESRV GROUP TOPIC MODEL            MODEL: clustering | broadcasting; runs until stdin closes
  pull NAMESRV GROUP TOPIC EXPECT TIMEOUT_S

MODE try-sync sends like sync but reports a refused send as a "send-failed" event and goes on.
With THRUSTER_ACL_ACCESS_KEY and THRUSTER_ACL_SECRET_KEY set, every producer and consumer signs
its requests (the client's own ACL signing, set_session_credentials, channel ALIYUN).
"""
import json
import os
import sys
import threading
import time

from rocketmq.client import Message, Producer, PullConsumer, PushConsumer, SendStatus
from rocketmq.ffi import MessageModel, dll
from rocketmq.exceptions import ffi_check

_out = threading.Lock()


def emit(**event):
    with _out:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def with_credentials(client, set_credentials):
    """Applies the ACL account from the environment, if any, through `set_credentials`."""
    access_key = os.environ.get("THRUSTER_ACL_ACCESS_KEY")
    secret_key = os.environ.get("THRUSTER_ACL_SECRET_KEY")
    if access_key is not None and secret_key is not None:
        set_credentials(access_key, secret_key, "ALIYUN")
    return client


def message(topic, body, i):
    msg = Message(topic)
    msg.set_keys("key-%d" % i)
    msg.set_tags("TagA")
    msg.set_body(body)
    return msg


def send_orderly(producer, msg, key, attempts=3):
    # The client's own retries (retry_times) pick another queue after a failure, which breaks
    # the key's order; the C++ client 2.x fails a send now and then on a fresh connection or
    # route ("No route info of this topic"). So retry here, with the same key: same queue.
    for attempt in range(attempts):
        try:
            return producer.send_orderly(msg, key, retry_times=0)
        except Exception as error:  # noqa: BLE001 - the wrapper raises a family of types
            if attempt + 1 == attempts:
                raise
            emit(event="send-retried", key=key, error=str(error))
            time.sleep(0.1)


def send_sync(producer, msg, attempts=3):
    # The C++ client 2.x now and then fails a send with "No route info of this topic" while it
    # refreshes a route it already had (seen against any broker version): the message never
    # left the client, so sending it again cannot store it twice. Anything else is raised.
    for attempt in range(attempts):
        try:
            return producer.send_sync(msg)
        except Exception as error:  # noqa: BLE001 - the wrapper raises a family of types
            if attempt + 1 == attempts or "No route info" not in str(error):
                raise
            emit(event="send-retried", error=str(error))
            time.sleep(0.1)


def produce(namesrv, topic, mode, count, prefix):
    producer = Producer("thruster-test-producer-%s" % mode)
    with_credentials(producer, producer.set_session_credentials)
    producer.set_namesrv_addr(namesrv)
    producer.start()
    pending = threading.Semaphore(0)
    bodies = ["%s-%d" % (prefix, i) for i in range(count)]
    if mode == "batch":
        result = producer.send_batch([message(topic, b, i) for i, b in enumerate(bodies)])
        for body in bodies:
            emit(event="sent", body=body, status=int(result.status), msg_id=result.msg_id)
        bodies = []
    for i, body in enumerate(bodies):
        msg = message(topic, body, i)
        if mode == "sync":
            result = send_sync(producer, msg)
            emit(event="sent", body=body, status=int(result.status), msg_id=result.msg_id,
                 offset=result.offset)
        elif mode == "try-sync":
            try:
                result = send_sync(producer, msg)
            except Exception as error:  # noqa: BLE001 - the wrapper raises a family of types
                emit(event="send-failed", body=body, error=str(error))
                continue
            emit(event="sent", body=body, status=int(result.status), msg_id=result.msg_id,
                 offset=result.offset)
        elif mode in ("orderly", "each-queue"):
            # The sharding key picks the queue (hash of the key modulo the queue count):
            # "orderly" uses 3 keys, "each-queue" key i (message i to queue i mod count).
            key = i % 3 if mode == "orderly" else i
            result = send_orderly(producer, msg, key)
            emit(event="sent", body=body, status=int(result.status), msg_id=result.msg_id,
                 offset=result.offset, key=key)
        elif mode == "oneway":
            producer.send_oneway(msg)
            emit(event="sent", body=body, status=int(SendStatus.OK))
        elif mode == "async":
            def ok(result, body=body):
                emit(event="sent", body=body, status=int(result.status), msg_id=result.msg_id)
                pending.release()

            def failed(error, body=body):
                emit(event="send-failed", body=body, error=str(error))
                pending.release()

            producer.send_async(msg, ok, failed)
    if mode == "async":
        for _ in bodies:
            if not pending.acquire(timeout=30):
                emit(event="error", error="async send callbacks missing")
                break
    producer.shutdown()
    emit(event="done")


def push(namesrv, group, topic, model):
    consumer = PushConsumer(group, message_model=(
        MessageModel.BROADCASTING if model == "broadcasting" else MessageModel.CLUSTERING))
    with_credentials(consumer, consumer.set_session_credentials)
    consumer.set_namesrv_addr(namesrv)
    consumer.set_instance_name("%s-%d" % (group, id(consumer)))

    def on_message(msg):
        emit(event="received", body=text(msg.body), queue=msg.queue_id,
             offset=msg.queue_offset, commit_log_offset=msg.commit_log_offset,
             topic=text(msg.topic), tags=text(msg.tags), keys=text(msg.keys))

    consumer.subscribe(topic, on_message)
    consumer.start()
    emit(event="started")
    sys.stdin.read()  # until the test closes our stdin
    consumer.shutdown()
    emit(event="done")


class PullConsumerByBroker(PullConsumer):
    """The wrapper's PullConsumer keys its local offsets by topic@queueId, so when a topic has
    queues on two brokers (any RocketMQ cluster with two masters, or Thruster's broker per
    shard) both brokers' queue 0 share one offset: messages are skipped or read twice. The key
    names the broker here; the pulling itself is the wrapper's and the C++ client's own."""

    def _get_mq_key(self, mq):
        return "%s@%s@%s" % (mq.topic, mq.brokerName, mq.queueId)


def pull(namesrv, group, topic, expect, timeout_s):
    consumer = PullConsumerByBroker(group)
    # The wrapper has no set_session_credentials on PullConsumer; the library has the call.
    with_credentials(consumer, lambda ak, sk, channel: ffi_check(
        dll.SetPullConsumerSessionCredentials(consumer._handle, ak.encode(), sk.encode(),
                                              channel.encode())))
    consumer.set_namesrv_addr(namesrv)
    consumer.start()
    received = 0
    deadline = time.time() + timeout_s
    while received < expect and time.time() < deadline:
        for msg in consumer.pull(topic):
            received += 1
            emit(event="received", body=text(msg.body), queue=msg.queue_id,
                 offset=msg.queue_offset, commit_log_offset=msg.commit_log_offset)
    consumer.shutdown()
    emit(event="done", received=received)


def main(argv):
    command = argv[1]
    if command == "produce":
        produce(argv[2], argv[3], argv[4], int(argv[5]), argv[6])
    elif command == "push":
        push(argv[2], argv[3], argv[4], argv[5])
    elif command == "pull":
        pull(argv[2], argv[3], argv[4], int(argv[5]), float(argv[6]))
    else:
        raise SystemExit("unknown command %r" % command)


if __name__ == "__main__":
    main(sys.argv)
