//! The detectors' unit tests, by subject: event sequences (with their exact
//! timing) in, findings out, through [`super::testkit::Kit`] — both ways:
//! the incident is found, and the healthy look-alike is not.
// Errnos as the kernel returns them, and an exit with code 1.
const EADDRINUSE: i32 = -98;
const EADDRNOTAVAIL: i32 = -99;
const EINPROGRESS: i32 = -115;
const ECONNREFUSED: i32 = -111;
const CODE1: u32 = 0x100;

mod connects;
mod containers;
mod crash;
mod crash_loops;
mod exec_wakes;
mod fork_storm;
mod instances;
mod ports;
mod registry;
mod reload;
mod repair;
mod zombies;
