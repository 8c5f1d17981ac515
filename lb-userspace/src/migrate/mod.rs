//! Moving to drlb from another load balancer's configuration.
//!
//! - [`keepalived`]: `drlb import-keepalived`, keepalived.conf's LVS part as drlb YAML and
//!   the rest as a VRRP-only keepalived.conf.

pub mod keepalived;
