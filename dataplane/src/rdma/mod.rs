//! RDMA transport (being written).
