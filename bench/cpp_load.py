"""Load from an unchanged RocketMQ client: the Apache RocketMQ C++ client 2.x that PyPI's
`rocketmq==0.4.4` bundles (the one the integration tests use), sending synchronously from
THREADS threads for DURATION_S seconds. ctypes releases the GIL for the client's calls, so
the threads send concurrently. Prints one JSON line: messages, msg/s, latency percentiles and,
with --broker-pid, the broker's CPU per message from /proc (user + system, whole process).

  python cpp_load.py NAMESRV TOPIC [--threads 8] [--duration-s 10] [--body-bytes 1024]
                     [--broker-pid PID] [--label NAME]

bench/compare-modes.sh builds the venv and runs this against several brokers in turn.
"""
import argparse
import json
import os
import threading
import time

from rocketmq.client import Message, Producer, SendStatus


def broker_cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("namesrv")
    parser.add_argument("topic")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--body-bytes", type=int, default=1024)
    parser.add_argument("--broker-pid", type=int)
    parser.add_argument("--label", default="cpp")
    args = parser.parse_args()

    producer = Producer("thruster-bench-cpp-%d" % os.getpid())
    producer.set_namesrv_addr(args.namesrv)
    producer.start()
    body = b"x" * args.body_bytes
    # Warm up: routes, connections, topic creation on every broker of the route.
    for _ in range(64):
        message = Message(args.topic)
        message.set_body(body)
        producer.send_sync(message)

    latencies = [[] for _ in range(args.threads)]
    errors = [0] * args.threads
    error_samples = []  # the first few, to say what failed
    stop = threading.Event()

    def failed(i, what):
        errors[i] += 1
        if len(error_samples) < 5:
            error_samples.append(what)

    def sender(i):
        message = Message(args.topic)
        message.set_body(body)
        own = latencies[i]
        while not stop.is_set():
            sent = time.perf_counter()
            try:
                result = producer.send_sync(message)
                if result.status != SendStatus.OK:
                    failed(i, "status %s" % result.status)
                    continue
            except Exception as error:  # the client raises on timeouts and broker errors
                failed(i, str(error)[:300])
                continue
            own.append(time.perf_counter() - sent)

    cpu_before = broker_cpu_s(args.broker_pid) if args.broker_pid else None
    started = time.perf_counter()
    threads = [threading.Thread(target=sender, args=(i,)) for i in range(args.threads)]
    for thread in threads:
        thread.start()
    time.sleep(args.duration_s)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu_after = broker_cpu_s(args.broker_pid) if args.broker_pid else None
    producer.shutdown()

    all_latencies = sorted(x for own in latencies for x in own)
    count = len(all_latencies)
    result = {
        "label": args.label,
        "messages": count,
        "errors": sum(errors),
        "elapsed_s": round(elapsed, 3),
        "msg_per_s": round(count / elapsed, 1),
        "p50_us": round(percentile(all_latencies, 0.50) * 1e6),
        "p99_us": round(percentile(all_latencies, 0.99) * 1e6),
        "p999_us": round(percentile(all_latencies, 0.999) * 1e6),
    }
    if error_samples:
        result["error_samples"] = error_samples
    if cpu_before is not None:
        spent = cpu_after - cpu_before
        result["broker_cpu_us_per_msg"] = round(spent * 1e6 / max(count, 1), 2)
        result["broker_cores"] = round(spent / elapsed, 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
