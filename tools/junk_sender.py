"""Send junk to a broker: random bytes on features topics, as a broken or hostile client would.

The receiver's junk handling (docs/server.md, Faults) is tested and benchmarked against this, run as its own
process as in the field: it must not share an interpreter lock with the receiver it floods.

    python tools/junk_sender.py --broker mqtt://127.0.0.1:1883 --count 20000 --size 100 --seconds 10
    python tools/junk_sender.py --broker mqtt://127.0.0.1:1883 --count 1 --size 104857600   # one oversized

``--seconds 0`` sends as fast as paho can (QoS 1, 1000 in flight). Messages go to ten fake device ids,
``edgekit/v1/junk-<i % 10>/features``. Exits 0 once the broker acknowledged every message.
"""

from __future__ import annotations

import argparse
import os
import time

import paho.mqtt.client as mqtt

from edgekit.mqtt.urls import parse_broker_url


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broker", required=True, help="mqtt://host:port of the broker")
    p.add_argument("--count", type=int, default=20_000, help="messages to send")
    p.add_argument("--size", type=int, default=100, help="bytes per message")
    p.add_argument("--seconds", type=float, default=0.0, help="spread the messages over this long (0: flat out)")
    args = p.parse_args()
    broker = parse_broker_url(args.broker)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="junk-sender", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    start = time.monotonic()
    infos = []
    for i in range(args.count):
        infos.append(client.publish(f"edgekit/v1/junk-{i % 10}/features", os.urandom(args.size), qos=1))
        if args.seconds and i % 100 == 99:  # pace in steps of 100: a sleep per message would cap the rate
            time.sleep(max(0.0, start + args.seconds * (i + 1) / args.count - time.monotonic()))
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
