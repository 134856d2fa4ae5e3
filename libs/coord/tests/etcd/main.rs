//! Integration tests against a real etcd (one server per test).

mod common;

mod connect;
mod election;
mod epoch;
mod kv;
mod ownership;
mod session;
mod watch;
