//! The smallest executor: polls one invocation to completion on the calling thread.
//!
//! Stores that complete their futures at once (storage-side, and the blocking RESP store) never
//! leave an invocation pending for long, so polling in a loop with a no-op waker is all it takes.
//! Stores that keep many invocations in flight drive them with their own executor.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Runs `fut` to completion on this thread, polling it again whenever it yields.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::hint::spin_loop();
    }
}

/// A future that is pending once, then ready: a voluntary suspension point.
pub fn yield_now() -> YieldNow {
    YieldNow(false)
}

/// See [`yield_now`].
#[derive(Debug)]
pub struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_resumes_after_yields() {
        let out = block_on(async {
            let mut n = 0;
            for _ in 0..3 {
                yield_now().await;
                n += 1;
            }
            n
        });
        assert_eq!(out, 3);
    }
}
