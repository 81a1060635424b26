"""MQTT, the transport between device and server, in one room.

Clients: ``urls`` (broker URLs), ``topics`` (topic names, device ids, packet sizes, topic aliases),
``client`` (the paho client, protocol detection), ``client_loop`` (the one thread that owns it), ``security``
(TLS and credentials of every client). Broker side: ``broker`` (``edgekit broker``, a local Mosquitto),
``secure_broker`` (TLS listener, ACLs), ``certs`` (``edgekit certs``). ``byte_meter`` counts TCP bytes.
"""
