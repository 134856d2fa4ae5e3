//! gRPC API types generated from `proto/` at build time (never checked in, so
//! they cannot drift from the .proto files).

pub mod v1 {
    tonic::include_proto!("cutover.v1");
}

pub mod fetcher {
    pub mod v1 {
        tonic::include_proto!("cutover.fetcher.v1");
    }
}

pub mod router {
    pub mod v1 {
        tonic::include_proto!("cutover.router.v1");
    }
}
