//! The gateway between real loopback servers: replicas are axum servers (WebSockets through a
//! hyper upgrade), the "dstack server" answering `projects/get` is a tiny axum server, HTTPS
//! uses certificates made here with rcgen. `ssh.rs` reaches replicas through a real sshd in a
//! Docker test host (`DSTACK_TEST_DOCKER=1`).

mod api;
mod harness;
mod serving;
mod ssh;
mod tls;
