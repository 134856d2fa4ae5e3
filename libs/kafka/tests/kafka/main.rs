//! Integration tests of the client against librdkafka's mock cluster and
//! against a misbehaving fake broker. One test binary, so the large
//! librdkafka static library is linked once.

mod admin;
mod bounded_decode;
mod common;
mod connect;
mod data_path;
mod fake_peer;
mod faults;
mod fetch_many;
mod peer;
mod write_order;
