//! The Tokio runtime hooks, as plain functions a user can also call from
//! callbacks of their own.
//!
//! Tokio keeps one callback per hook: [`Builder::on_before_task_poll`] and the
//! others *replace* any callback set before. [`Blackbox::install_hooks`] sets
//! all of them; a program that needs its own callbacks too calls the methods of
//! [`BlackboxHooks`] from inside them instead.
//!
//! The task hooks (`on_task_spawn`, `on_before_task_poll`,
//! `on_after_task_poll`, `on_task_terminate`) exist only when the program is
//! built with `--cfg tokio_unstable`. Without it the recorder still sees
//! worker park/unpark, thread start/stop and request spans, and
//! [`BlackboxStats::task_hooks`] is `false`.
//!
//! Tokio calls no hooks for tasks on a [`LocalSet`] that is not the runtime's
//! own; those tasks are invisible to the recorder.
//!
//! [`Builder::on_before_task_poll`]: tokio::runtime::Builder::on_before_task_poll
//! [`Blackbox::install_hooks`]: crate::Blackbox::install_hooks
//! [`BlackboxStats::task_hooks`]: crate::BlackboxStats::task_hooks
//! [`LocalSet`]: tokio::task::LocalSet

use crate::capture::Capture;
#[cfg(tokio_unstable)]
use crate::capture::{PollHooks, task_id_u64};
use crate::event::EventKind;
#[cfg(tokio_unstable)]
use crate::event::encode_delay;
use std::fmt;
use std::sync::Arc;
#[cfg(tokio_unstable)]
use tokio::runtime::TaskMeta;

/// The recorder's runtime hooks, to call from your own Tokio callbacks.
///
/// Cloning is cheap (one `Arc`). Every method records one event on the
/// calling thread's ring and returns in a few nanoseconds.
///
/// # Examples
///
/// Keep a callback of your own and still record:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (blackbox, _guard) = tokio_blackbox::Blackbox::builder().build()?;
/// let hooks = blackbox.hooks();
/// let mut builder = tokio::runtime::Builder::new_multi_thread();
/// blackbox.install_hooks(&mut builder); // all hooks, then override one:
/// let h = hooks.clone();
/// builder.on_thread_park(move || {
///     h.on_thread_park();
///     // ... your own work here ...
/// });
/// let rt = builder.enable_all().build()?;
/// rt.block_on(async { tokio::spawn(async {}).await })?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BlackboxHooks {
    pub(crate) capture: Arc<Capture>,
    pub(crate) schedule_delay: bool,
}

impl fmt::Debug for BlackboxHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlackboxHooks")
            .field("enabled", &self.capture.enabled)
            .field("schedule_delay", &self.schedule_delay)
            .finish()
    }
}

impl BlackboxHooks {
    /// Records a task spawn with its spawn location. For `on_task_spawn`.
    #[cfg(tokio_unstable)]
    #[cfg_attr(docsrs, doc(cfg(tokio_unstable)))]
    #[inline]
    pub fn on_task_spawn(&self, meta: &TaskMeta<'_>) {
        self.capture
            .spawn(task_id_u64(&meta.id()), meta.spawned_at());
    }

    /// Records the start of a poll, with the scheduling delay when tracked.
    /// For `on_before_task_poll`.
    #[cfg(tokio_unstable)]
    #[cfg_attr(docsrs, doc(cfg(tokio_unstable)))]
    #[inline]
    pub fn on_before_task_poll(&self, meta: &TaskMeta<'_>) {
        let delay = if self.schedule_delay {
            meta.schedule_latency()
                .map_or(0, |d| encode_delay(d.as_nanos() as u64))
        } else {
            0
        };
        self.capture.poll_start(task_id_u64(&meta.id()), delay);
    }

    /// Records the end of a poll. For `on_after_task_poll`.
    ///
    /// One 4-byte event and no clock reading: the task is the one whose poll
    /// started last on this thread, and the time is that of the thread's next
    /// event. The spawn location rides along (bits of its address, named
    /// through what [`on_task_spawn`](Self::on_task_spawn) registered), so a
    /// task whose spawn event was overwritten long ago still has its name.
    #[cfg(tokio_unstable)]
    #[cfg_attr(docsrs, doc(cfg(tokio_unstable)))]
    #[inline]
    pub fn on_after_task_poll(&self, meta: &TaskMeta<'_>) {
        self.capture.poll_end(meta.spawned_at());
    }

    /// Records that a task completed or was cancelled. For `on_task_terminate`.
    #[cfg(tokio_unstable)]
    #[cfg_attr(docsrs, doc(cfg(tokio_unstable)))]
    #[inline]
    pub fn on_task_terminate(&self, meta: &TaskMeta<'_>) {
        self.capture.terminate(task_id_u64(&meta.id()));
    }

    /// Records that this worker parked. For `on_thread_park`.
    #[inline]
    pub fn on_thread_park(&self) {
        self.capture.record(EventKind::Park, 0, 0);
    }

    /// Records that this worker unparked. For `on_thread_unpark`.
    #[inline]
    pub fn on_thread_unpark(&self) {
        self.capture.record(EventKind::Unpark, 0, 0);
    }

    /// Records a runtime thread's start. For `on_thread_start`.
    pub fn on_thread_start(&self) {
        self.capture.record(EventKind::ThreadStart, 0, 0);
    }

    /// Records a runtime thread's stop. For `on_thread_stop`.
    pub fn on_thread_stop(&self) {
        self.capture.record(EventKind::ThreadStop, 0, 0);
    }

    /// Sets every hook on a runtime builder (replacing callbacks set before).
    ///
    /// Inlined (as [`Blackbox::install_hooks`](crate::Blackbox::install_hooks),
    /// its caller), so that the closures are compiled in the program's crate:
    /// there a thread-local access is one `%fs`-relative instruction, where
    /// compiled in this library it is a general-dynamic access the linker
    /// relaxes but whose saved registers stay (then 53 instructions for both poll
    /// hooks against 67; `tools/hook-asm.sh`).
    #[inline]
    pub(crate) fn install(&self, builder: &mut tokio::runtime::Builder) {
        let h = self.clone();
        builder.on_thread_park(move || h.on_thread_park());
        let h = self.clone();
        builder.on_thread_unpark(move || h.on_thread_unpark());
        let h = self.clone();
        builder.on_thread_start(move || h.on_thread_start());
        let h = self.clone();
        builder.on_thread_stop(move || h.on_thread_stop());
        #[cfg(tokio_unstable)]
        {
            let h = self.clone();
            builder.on_task_spawn(move |m| h.on_task_spawn(m));
            // Without the schedule delay, a poll start of its own, chosen for
            // the clock once: no branch on either setting and no delay word.
            // The poll hooks hold the values their fast paths compare
            // (`PollHooks`): no pointer hop to the capture before them.
            let poll = PollHooks::new(self.capture.clone());
            if self.schedule_delay {
                let h = self.clone();
                builder.on_before_task_poll(move |m| h.on_before_task_poll(m));
            } else if self.capture.clock.is_tsc() {
                let p = poll.clone();
                builder.on_before_task_poll(move |m| p.start_tsc(task_id_u64(&m.id())));
            } else {
                let p = poll.clone();
                builder.on_before_task_poll(move |m| p.start_other_clock(task_id_u64(&m.id())));
            }
            builder.on_after_task_poll(move |m| poll.end(m.spawned_at()));
            let h = self.clone();
            builder.on_task_terminate(move |m| h.on_task_terminate(m));
            if self.schedule_delay {
                builder.track_task_schedule_latency();
            }
        }
    }
}
