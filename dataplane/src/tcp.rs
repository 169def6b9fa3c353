//! TCP transport over io_uring (being written).
