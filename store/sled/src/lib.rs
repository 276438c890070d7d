//! sled backend
