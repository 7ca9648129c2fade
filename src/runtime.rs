//! The thread that runs every exchange of the process. One single-threaded
//! Tokio runtime spends less CPU per exchange than a work-stealing pool (no
//! workers waking each other) and serves thousands of exchanges a second; it
//! lives as long as the process, so pooled connections outlive any one
//! JavaScript thread.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use tokio::runtime::Handle;

static RUNTIME: LazyLock<Handle> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("obo-native: the Tokio runtime could not start");
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("obo-native".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .expect("obo-native: the runtime thread could not start");
    handle
});

/// Runs `work` and hands its output to `done`; if `work` panics, `done` gets
/// `on_panic(())` instead, so that whoever waits is always answered.
pub fn spawn_settled<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
    done: impl FnOnce(T) + Send + 'static,
    on_panic: impl FnOnce(()) -> T + Send + 'static,
) {
    RUNTIME.spawn(async move {
        let output = CatchUnwind(Box::pin(work)).await.unwrap_or_else(on_panic);
        done(output);
    });
}

/// Turns a panic inside the wrapped future into `Err`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_answered_too() {
        let (sender, receiver) = std::sync::mpsc::channel();
        let answer = sender.clone();
        spawn_settled(async { panic!("boom") }, move |value: u32| answer.send(value).unwrap(), |()| 7);
        spawn_settled(async { 1 }, move |value: u32| sender.send(value).unwrap(), |()| 7);
        let mut answers = [receiver.recv().unwrap(), receiver.recv().unwrap()];
        answers.sort();
        assert_eq!(answers, [1, 7]);
    }
}
