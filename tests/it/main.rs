//! fleetlet's integration tests: real Git servers, real Wasm components, the real agent binary.

mod testkit;

mod agent;
mod artifacts;
mod audit;
mod bundle;
mod bundle_corpus;
mod cli;
mod git;
mod k3s;
mod mirror;
mod oci;
mod state;
mod store;
mod trust;
mod trust_agent;
mod wasm;

/// The test kit's own promises.
mod testkit_checks {
    use crate::testkit::components::{free_port, slot_block};
    use std::net::TcpListener;

    #[test]
    fn free_ports_never_repeat_and_come_from_the_slots_block_under_nextest() {
        let ports: Vec<u16> = (0..300).map(|_| free_port()).collect();
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        if let Some((start, len)) = slot_block() {
            eprintln!("slot block {start}..{}", start as usize + len);
            assert!(
                ports
                    .iter()
                    .all(|&p| p >= start && (p as usize) < start as usize + len),
                "{ports:?}"
            );
        }
        // Each is really free: a server can bind it.
        for &p in &ports[..10] {
            TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
