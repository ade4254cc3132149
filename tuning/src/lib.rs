//! `thruster-tune`'s parts, as a library: the host checks ([`check`]) and the tuning that
//! applies and undoes them ([`apply`]) read the host through [`host::Host`] (a root directory,
//! so tests can fake `/sys` and `/proc`); the disk probe ([`probe`]) writes
//! [`io_properties::IoProperties`], which the broker reads at start. Free of the broker's
//! runtime: std, libc and threads.

pub mod apply;
pub mod check;
pub mod host;
pub mod io_properties;
pub mod probe;
