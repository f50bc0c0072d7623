//! Pure decisions of the control plane.
//!
//! Nothing here does I/O, touches a clock or is async: every function takes a snapshot of
//! what is known (and `now` where time matters) and returns data. The server loads the
//! snapshots, calls these functions and carries out what they return.
//!
//! - [`autoscale`]: service autoscaling (desired replica counts, scale up and down).
//! - [`blocks`]: hosts split among concurrent jobs (shares, divisibility, runtime limits).
//! - [`fleet`]: update-in-place vs re-create of fleet specs, and the fleet/instance life cycle.
//! - [`instance`]: what the instances loop does to an SSH host (deploy, check, release).
//! - [`jobspec`]: the job specs of a run (what dstack's "job configurators" compute).
//! - [`probes`]: readiness probes of service replicas (streaks, due times, readiness).
//! - [`rolling`]: rolling deployment of an updated service (surge, drain, stop).
//! - [`update`]: whether an applied run spec updates an active run in place.
pub mod autoscale;
pub mod blocks;
pub mod fleet;
pub mod instance;
pub mod job;
pub mod jobspec;
pub mod offers;
pub mod probes;
pub mod rolling;
pub mod run;
pub mod schedule;
pub mod update;
