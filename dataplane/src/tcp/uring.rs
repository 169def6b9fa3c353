//! The io_uring of one TCP endpoint: setup, pushing entries, entering the kernel only when
//! needed, waiting with a timeout, and counting what is in flight.
//!
//! The ring is built with `COOP_TASKRUN | TASKRUN_FLAG` where the kernel has them (5.19+): the
//! kernel then does not interrupt the thread to post completions, but raises `IORING_SQ_TASKRUN`
//! in the shared flags when a kernel entry would post some. So polling is a load of the
//! completion queue's tail and of that flag, and [`Uring::submit`] enters the kernel only when
//! there is something to submit or to run. On older kernels the plain ring is used and completions
//! arrive without help.

use std::cell::Cell;
use std::io;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use io_uring::{squeue, types, IoUring};

use crate::{Error, Result};

/// One endpoint's ring.
pub(super) struct Uring {
    ring: IoUring,
    /// The ring was built with `COOP_TASKRUN | TASKRUN_FLAG` (see the module docs).
    taskrun_flag: bool,
    /// The kernel takes a timeout with the wait (`IORING_FEAT_EXT_ARG`, 5.11+).
    ext_arg: bool,
    /// Entries pushed whose completion has not been reaped. Every entry we push produces exactly
    /// one completion (none is multishot), so zero means the kernel holds no pointer of ours.
    in_flight: usize,
    /// `!Sync`: [`Uring::has_completions`] borrows the queues through `&self`, which is sound only
    /// if no other method runs at the same time, i.e. if `&Uring` never crosses threads.
    _not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("taskrun_flag", &self.taskrun_flag)
            .field("ext_arg", &self.ext_arg)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

fn setup_error(source: io::Error) -> Error {
    Error::Io {
        op: "io_uring setup",
        source,
    }
}

/// Errors of `io_uring_enter` that mean "try again later", not "the ring is broken".
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY | libc::ETIME)
    )
}

impl Uring {
    /// A ring with `entries` submission entries and twice that many completion entries.
    /// [`Error::Io`] with op `"io_uring setup"` where the kernel refuses (no io_uring, or a
    /// seccomp profile or `kernel.io_uring_disabled` that forbids it: `EPERM`/`ENOSYS`).
    pub(super) fn new(entries: u32) -> Result<Self> {
        let cq_entries = entries.saturating_mul(2);
        let coop = IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(cq_entries)
            .build(entries);
        let (ring, taskrun_flag) = match coop {
            Ok(ring) => (ring, true),
            // An older kernel that does not know the flags: a plain ring.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (
                IoUring::builder()
                    .setup_cqsize(cq_entries)
                    .build(entries)
                    .map_err(setup_error)?,
                false,
            ),
            Err(e) => return Err(setup_error(e)),
        };
        let ext_arg = ring.params().is_feature_ext_arg();
        Ok(Self {
            ring,
            taskrun_flag,
            ext_arg,
            in_flight: 0,
            _not_sync: PhantomData,
        })
    }

    /// Entries pushed and not yet reaped.
    #[cfg(test)]
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues `entry`; if the submission queue is full, first hands the queued entries to the
    /// kernel. The entry reaches the kernel at the next [`Uring::submit`] or wait at the latest.
    ///
    /// # Safety
    ///
    /// Every buffer `entry` points at must stay allocated, unmoved, and untouched in the direction
    /// the kernel uses it (not read for a RECV, not written for a SEND) until this ring hands back
    /// the entry's completion from [`Uring::next_completion`].
    pub(super) unsafe fn push(&mut self, entry: &squeue::Entry) -> Result<()> {
        for _ in 0..64 {
            // SAFETY: the caller guarantees the buffers outlive the operation (see above); the
            // queue itself copies the entry.
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                self.in_flight += 1;
                return Ok(());
            }
            // Full: let the kernel consume what is queued to make room.
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if is_transient(&e) => std::thread::yield_now(),
                Err(source) => {
                    return Err(Error::Io {
                        op: "io_uring submit",
                        source,
                    })
                }
            }
        }
        Err(Error::Io {
            op: "io_uring submit",
            source: io::Error::new(io::ErrorKind::WouldBlock, "submission queue stays full"),
        })
    }

    /// Hands queued entries to the kernel and lets it post pending completions; a no-op without a
    /// system call when there is neither.
    pub(super) fn submit(&mut self) -> Result<()> {
        let sq = self.ring.submission();
        let needed = !sq.is_empty() || (self.taskrun_flag && sq.taskrun()) || sq.cq_overflow();
        drop(sq);
        if !needed {
            return Ok(());
        }
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e) if is_transient(&e) => Ok(()),
            Err(source) => Err(Error::Io {
                op: "io_uring submit",
                source,
            }),
        }
    }

    /// Whether a completion is waiting or would be posted by the next kernel entry. No system
    /// call.
    pub(super) fn has_completions(&self) -> bool {
        // SAFETY: the queues are only ever borrowed for the duration of one method of `Uring`, and
        // `Uring` is `!Sync`, so while this `&self` method runs no other method of this ring runs
        // and no other `CompletionQueue` or `SubmissionQueue` exists. Dropping these handles
        // stores back the head and tail they read, which changes nothing.
        let cq = unsafe { self.ring.completion_shared() };
        if !cq.is_empty() {
            return true;
        }
        drop(cq);
        // SAFETY: as above.
        let sq = unsafe { self.ring.submission_shared() };
        (self.taskrun_flag && sq.taskrun()) || sq.cq_overflow()
    }

    /// The next completion, as (user_data, result), without blocking.
    pub(super) fn next_completion(&mut self) -> Option<(u64, i32)> {
        let cqe = self.ring.completion().next()?;
        self.in_flight = self.in_flight.saturating_sub(1);
        Some((cqe.user_data(), cqe.result()))
    }

    /// Submits what is queued and sleeps in the kernel until a completion arrives or `timeout`
    /// passes (returns at once if one is already waiting). Does not reap.
    pub(super) fn wait(&mut self, timeout: Duration) -> Result<()> {
        if !self.ext_arg {
            // Pre-5.11 kernel: no timeout on the wait itself, so poll in short sleeps.
            self.submit()?;
            if !self.has_completions() {
                std::thread::sleep(timeout.min(Duration::from_millis(1)));
            }
            return Ok(());
        }
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if is_transient(&e) => Ok(()),
            Err(source) => Err(Error::Io {
                op: "io_uring wait",
                source,
            }),
        }
    }

    /// Teardown: reaps completions, handing each to `on_completion`, until nothing is in flight
    /// or `deadline` passes. Returns whether everything was reaped. The caller must have asked for
    /// every operation to end (cancelled it, shut its socket down).
    pub(super) fn drain(
        &mut self,
        deadline: Instant,
        mut on_completion: impl FnMut(u64, i32),
    ) -> bool {
        loop {
            while let Some((user_data, result)) = self.next_completion() {
                on_completion(user_data, result);
            }
            if self.in_flight == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let step = (deadline - now).min(Duration::from_millis(10));
            if self.wait(step).is_err() {
                // Cannot even wait: give up after the deadline, sleeping meanwhile.
                std::thread::sleep(step);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_entries_is_a_setup_error() {
        match Uring::new(0) {
            Err(Error::Io { op, .. }) => assert_eq!(op, "io_uring setup"),
            other => panic!("expected a setup error, got {other:?}"),
        }
    }

    #[test]
    fn nop_round_trip_and_timed_wait() {
        let mut ring = Uring::new(8).unwrap();
        assert!(!ring.has_completions());
        let t = Instant::now();
        ring.wait(Duration::from_millis(20)).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(15),
            "wait did not time out"
        );
        // SAFETY: a NOP points at no buffer.
        unsafe { ring.push(&io_uring::opcode::Nop::new().build().user_data(7)) }.unwrap();
        assert_eq!(ring.in_flight(), 1);
        ring.wait(Duration::from_secs(1)).unwrap();
        assert!(ring.has_completions());
        assert_eq!(ring.next_completion(), Some((7, 0)));
        assert_eq!(ring.in_flight(), 0);
        assert!(ring.drain(Instant::now(), |_, _| {}));
    }
}
