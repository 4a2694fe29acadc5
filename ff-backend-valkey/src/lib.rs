//! FlowFabric backend over valkey (arrives with its issue).
