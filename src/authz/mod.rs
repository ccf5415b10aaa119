//! Allow-list authorization (being written).
