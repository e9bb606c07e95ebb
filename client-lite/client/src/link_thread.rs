//! The client link on a thread of its own: it owns the link (`pb_link::ClientLink`) and its
//! carrier, and the main thread speaks to it in messages. Its records leave at their slots'
//! times by a precise sleep, and the thread does nothing else heavier than a seal and a
//! socket call, so that neither what the user does nor how long the main thread's work
//! takes (building packets, serving applications) moves a record on the wire.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use pb_link::{ClientLink, LinkError, Message, Rates};
use pb_transport::{ClientCarrier, TransportKind};

/// How long before a slot the thread stops everything else and waits for it.
const GUARD: Duration = Duration::from_micros(500);
/// Longest sleep between two looks at the carrier.
const TURN: Duration = Duration::from_millis(1);

/// What the link thread tells the main thread.
#[derive(Debug)]
pub enum Event {
    /// A message from the gateway.
    Message(Message),
    /// The link is gone (no answer, or its carrier failed); the thread has ended.
    Failed(String),
}

enum Command {
    Send(Message, bool),
    Stop,
}

/// What both threads read.
#[derive(Debug, Default)]
struct Shared {
    open: AtomicBool,
    /// Uplink slots missed (the thread was late: the machine, not the user).
    missed: AtomicU64,
}

/// The main thread's handle on a link thread. Dropping it stops the thread.
#[derive(Debug)]
pub struct LinkThread {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<Event>,
    shared: Arc<Shared>,
    kind: TransportKind,
    thread: Option<thread::JoinHandle<()>>,
}

impl LinkThread {
    /// Starts a link to the gateway whose link key is `key`, asking for `rates` (idle slots
    /// padded unless `padding` is false: INSECURE, the known-bad test setup), over
    /// `carrier`; `wake` is called whenever an event is waiting (it wakes the main
    /// thread's poll).
    pub fn start(
        carrier: Box<dyn ClientCarrier>,
        key: &[u8; 32],
        rates: Rates,
        padding: bool,
        seed: &[u8; 32],
        wake: impl Fn() + Send + 'static,
    ) -> std::io::Result<Self> {
        let (commands, inbox) = mpsc::channel();
        let (outbox, events) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let kind = carrier.kind();
        let mut link = ClientLink::new(Duration::ZERO, key, rates, seed);
        link.set_padding(padding);
        let state = Runner {
            link,
            carrier,
            origin: Instant::now(),
            inbox,
            outbox,
            shared: shared.clone(),
            wake: Box::new(wake),
        };
        let thread = thread::Builder::new()
            .name("pb-client-link".into())
            .spawn(move || state.run())?;
        Ok(Self {
            commands,
            events,
            shared,
            kind,
            thread: Some(thread),
        })
    }

    /// Which transport carries the link.
    pub fn kind(&self) -> TransportKind {
        self.kind
    }

    /// Whether the handshake is done.
    pub fn is_open(&self) -> bool {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Uplink slots missed so far.
    pub fn missed(&self) -> u64 {
        self.shared.missed.load(Ordering::Relaxed)
    }

    /// Queues a message for the gateway (`urgent`: ahead of packets).
    pub fn send(&self, message: Message, urgent: bool) {
        // A thread that has ended says so through its events.
        let _ = self.commands.send(Command::Send(message, urgent));
    }

    /// The next event, if any.
    pub fn poll_event(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}

impl Drop for LinkThread {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Runner {
    link: ClientLink,
    carrier: Box<dyn ClientCarrier>,
    origin: Instant,
    inbox: mpsc::Receiver<Command>,
    outbox: mpsc::Sender<Event>,
    shared: Arc<Shared>,
    wake: Box<dyn Fn() + Send>,
}

impl Runner {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn fail(&self, why: String) {
        self.shared.open.store(false, Ordering::Relaxed);
        let _ = self.outbox.send(Event::Failed(why));
        (self.wake)();
    }

    /// Sends what the link has due by `now` and flushes the carrier.
    fn send_due(&mut self, now: Duration) -> Result<(), String> {
        let mut sent = false;
        while let Some(record) = self.link.poll_record(now) {
            // A full carrier loses the record, like a lost datagram.
            let _ = self.carrier.send(&record);
            sent = true;
        }
        if sent {
            self.carrier
                .drive(Instant::now())
                .map_err(|e| format!("its link closed: {e}"))?;
        }
        Ok(())
    }

    fn run(mut self) {
        // The uplink's slots are this thread's to keep: real-time where the system permits
        // it (not on a phone), a precise sleep either way.
        let pacer = pb_pacing::Pacer::new(true);
        if pacer.realtime() {
            // A real-time thread must not fault (a fault can wait for a preempted thread);
            // pb-client is small, so all of it stays resident. Refused: faults stay possible.
            let _ = pb_pacing::lock_memory();
        }
        loop {
            // The next slot first, at its time, if it is close: nothing else may delay it.
            let now = self.now();
            if let Some(at) = self.link.next_deadline(now)
                && at <= now + GUARD + pacer.spin()
            {
                let emitting = pacer.emit_at(Instant::now() + at.saturating_sub(now));
                let now = self.now();
                let sent = self.send_due(now);
                drop(emitting);
                if let Err(why) = sent {
                    return self.fail(why);
                }
            }
            // Then commands, the carrier, and what came in.
            loop {
                match self.inbox.try_recv() {
                    Ok(Command::Send(m, urgent)) => {
                        // A full queue drops it, like a lost packet; requests are asked again.
                        let _ = self.link.send(m, urgent);
                    }
                    Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            if let Err(e) = self.carrier.drive(Instant::now()) {
                return self.fail(format!("its link closed: {e}"));
            }
            let now = self.now();
            let mut woke = false;
            while let Some(record) = self.carrier.recv() {
                self.link.handle_record(now, &record);
            }
            while let Some(m) = self.link.poll_message() {
                let _ = self.outbox.send(Event::Message(m));
                woke = true;
            }
            if woke {
                (self.wake)();
            }
            self.shared
                .open
                .store(self.link.is_open(), Ordering::Relaxed);
            self.shared
                .missed
                .store(self.link.stats().missed, Ordering::Relaxed);
            if let Some(e) = self.link.failed() {
                return self.fail(match e {
                    LinkError::NoAnswer => "the gateway did not answer the handshake".into(),
                    e => e.to_string(),
                });
            }
            // Handshake records go at once; slots wait for the top of the loop.
            let now = self.now();
            if self.link.next_deadline(now).is_some_and(|at| at <= now)
                && let Err(why) = self.send_due(now)
            {
                return self.fail(why);
            }
            // Sleep to just before the next slot, or one turn.
            let now = self.now();
            let mut wait = self
                .link
                .next_deadline(now)
                .map_or(TURN, |at| at.saturating_sub(now + GUARD + pacer.spin()))
                .min(TURN);
            if let Some(at) = self.carrier.next_deadline() {
                wait = wait.min(at.saturating_duration_since(Instant::now()));
            }
            if !wait.is_zero() {
                thread::sleep(wait);
            }
        }
    }
}
