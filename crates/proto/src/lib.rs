//! The clearinghouse's public contract, generated from `proto/` at build time.

#![allow(clippy::all, missing_docs, reason = "generated code")]

pub mod filing {
    pub mod v1 {
        tonic::include_proto!("clearinghouse.filing.v1");
    }
}
pub mod referral {
    pub mod v1 {
        tonic::include_proto!("clearinghouse.referral.v1");
    }
}
pub mod settlement {
    pub mod v1 {
        tonic::include_proto!("clearinghouse.settlement.v1");
    }
}
pub mod ledger {
    pub mod v1 {
        tonic::include_proto!("clearinghouse.ledger.v1");
    }
}
pub mod audit {
    pub mod v1 {
        tonic::include_proto!("clearinghouse.audit.v1");
    }
}
pub mod events {
    pub mod v1 {
        tonic::include_proto!("clearinghouse.events.v1");
    }
}

/// Encoded `FileDescriptorSet` of every clearinghouse package, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("clearinghouse_descriptor");

pub mod convert;
