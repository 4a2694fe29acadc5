//! FlowFabric backend over postgres (arrives with its issue).
