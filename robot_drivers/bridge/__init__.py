"""The hardware bridge: a server that owns the arm (`server.BridgeServer`, ``pandalab bridge
serve``) and the collector's driver that talks to it (`client.BridgeDriver`), over ZMQ
(`protocol`).  DESIGN.md, "The bridge"."""
