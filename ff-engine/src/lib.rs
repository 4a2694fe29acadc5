//! FlowFabric engine (arrives with its issue).
