//! `watcher top`: the terminal, the keys, and where the records come from —
//! its own pipeline (as `watcher trace`), or a running daemon's feed socket
//! (`--attach PATH`: no second set of kernel programs).
use crate::kernel::clock::Clock;
use std::{
    io::{BufRead, BufReader, Write},
    os::fd::AsRawFd,
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use crate::{
    cli::config::Config,
    kernel::loader::{self, LoadOptions},
    kernel::reader::ReaderOptions,
    output::record::Record,
    output::stats::{SharedStats, Stats},
    output::top::{
        model::{Model, Source},
        view::{self, Pane, Popup, Ui},
    },
    pipeline::{self, Output, PipelineSettings},
};

/// Redraws at most this often (at once when an incident opens).
const FRAME: Duration = Duration::from_millis(100);
/// Records queued for the screen before they are dropped (counted).
const QUEUE: usize = 65_536;

#[derive(Clone, Debug, Default)]
pub struct TopSettings {
    pub attach: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub load: LoadOptions,
    pub max_processes: usize,
}

/// The pipeline's records, handed to the screen's thread.
struct ToScreen {
    tx: SyncSender<Record>,
    dropped: Arc<AtomicU64>,
}

impl Output for ToScreen {
    fn write(&mut self, records: &[Record], _stats: &SharedStats) -> anyhow::Result<bool> {
        for r in records {
            match self.tx.try_send(r.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => return Ok(false),
            }
        }
        Ok(true)
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// stderr goes to /dev/null while the screen is up (a warning would be
/// drawn across it) and comes back after.
struct QuietStderr(Option<std::os::fd::OwnedFd>);

impl QuietStderr {
    fn start() -> QuietStderr {
        let saved = nix::unistd::dup(2).ok().map(|fd| {
            // SAFETY: dup returned a new descriptor we own.
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        });
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2(null.as_raw_fd(), 2);
        }
        // A panic says why on the real stderr (the terminal is restored
        // first by ratatui's hook, which wraps this one).
        if let Some(raw) = saved.as_ref().map(|fd| fd.as_raw_fd()) {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let _ = nix::unistd::dup2(raw, 2);
                prev(info)
            }));
        }
        QuietStderr(saved)
    }
}

impl Drop for QuietStderr {
    fn drop(&mut self) {
        if let Some(fd) = self.0.take() {
            let _ = nix::unistd::dup2(fd.as_raw_fd(), 2);
        }
    }
}

/// Whether to use colour: not with NO_COLOR set, nor on a dumb terminal.
fn colour() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map(|t| t != "dumb").unwrap_or(false)
}

pub fn run(s: TopSettings) -> anyhow::Result<ExitCode> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        anyhow::bail!("watcher top draws on a terminal and stdout is not one: run it in a terminal (or use `watcher trace` for a stream of lines)");
    }
    let (tx, rx) = sync_channel::<Record>(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut stats: Option<SharedStats> = None;
    // Listeners at start: (netns, tcp, address, port, pid, program).
    let mut seeded: Vec<(u32, bool, String, u16, u32, String)> = Vec::new();
    let mut pipeline_thread = None;
    let source = match &s.attach {
        Some(path) => {
            let stream = std::os::unix::net::UnixStream::connect(path).with_context(|| {
                format!("connecting to the daemon's feed socket {} (its [feed] socket; is `watcher run` running, and are you allowed to read it?)", path.display())
            })?;
            let d = done.clone();
            std::thread::Builder::new()
                .name("watcher-top-feed".into())
                .spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        if let Ok(r) = serde_json::from_str::<Record>(&line) {
                            if tx.send(r).is_err() {
                                return;
                            }
                        }
                    }
                    d.store(true, Ordering::Relaxed);
                })?;
            // SAFETY: a handler that only stores to an atomic.
            unsafe {
                for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                    libc::signal(sig, on_signal as *const () as libc::sighandler_t);
                }
            }
            Source::Attached(path.display().to_string())
        }
        None => {
            let config = match &s.config {
                Some(path) => Config::load(path)?,
                None => Config::default(),
            };
            let probes = loader::load(&s.load)?;
            for line in probes.degraded_lines() {
                eprintln!("watcher: {line}");
            }
            let signals = pipeline::Signals::install()?;
            let (engine, initial, _, sockets) =
                crate::cli::trace::engine_and_sockets(&config, s.max_processes);
            // What listens already, named from the process table.
            for k in sockets.iter().filter(|k| k.is_holder()) {
                for pid in &k.pids {
                    let name = engine
                        .enricher
                        .procs
                        .get(*pid)
                        .map(|p| p.comm.to_string())
                        .unwrap_or_else(|| "?".into());
                    seeded.push((k.netns, k.tcp, k.addr.to_string(), k.port, *pid, name));
                }
            }
            for r in initial {
                let _ = tx.try_send(r);
            }
            let st: SharedStats = Arc::new(Mutex::new(Stats {
                healthy: true,
                ..Stats::default()
            }));
            stats = Some(st.clone());
            let mut out = ToScreen {
                tx,
                dropped: dropped.clone(),
            };
            let settings = PipelineSettings {
                reader: ReaderOptions::for_load(&s.load),
                canary_interval: Some(Duration::from_secs(5)),
                canary_deadline: Duration::from_secs(2),
                reload_on_hup: false,
            };
            let d = done.clone();
            pipeline_thread = Some(
                std::thread::Builder::new()
                    .name("watcher-pipeline".into())
                    .spawn(move || {
                        let r = pipeline::run(probes, engine, settings, &mut out, st, signals)
                            .map(|_| ());
                        d.store(true, Ordering::Relaxed);
                        r
                    })?,
            );
            Source::Standalone
        }
    };
    let quiet = QuietStderr::start();
    let mut model = Model::new(source);
    for (netns, tcp, addr, port, pid, name) in seeded {
        model.seed_listener(netns, tcp, &addr, port, pid, &name);
    }
    let result = screen(
        rx,
        model,
        stats,
        &dropped,
        &done,
        colour(),
        s.attach.is_some(),
    );
    drop(quiet);
    if let Some(t) = pipeline_thread {
        // The pipeline ends at SIGTERM (its own handler); ask it if the screen ended first.
        if !done.load(Ordering::Relaxed) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM);
        }
        match t.join() {
            Ok(Err(e)) => return Err(e),
            Err(_) => anyhow::bail!("the pipeline thread panicked"),
            Ok(Ok(())) => {}
        }
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

fn screen(
    rx: Receiver<Record>,
    mut model: Model,
    stats: Option<SharedStats>,
    dropped: &AtomicU64,
    done: &AtomicBool,
    colour: bool,
    attached: bool,
) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let mut ui = Ui::new(colour);
    let started = Instant::now();
    let mut drawn_version = u64::MAX;
    let mut drawn_second = 0u64;
    let mut last_draw = Instant::now() - FRAME;
    let mut opened = 0u64;
    let mut force = true;
    let result = (|| -> anyhow::Result<()> {
        loop {
            while let Ok(r) = rx.try_recv() {
                model.apply(&r);
            }
            let now = Clock::mono_now();
            model.now_ns = model.now_ns.max(now);
            model.expire(now);
            if let Some(st) = &stats {
                let st = st.lock().expect("stats lock");
                model.lost = model.lost.max(st.lost);
                if !st.healthy {
                    model.health = Some(("blind".into(), "its canary did not come through".into()));
                } else if model.health.as_ref().is_some_and(|h| h.0 == "blind") {
                    model.health = None;
                }
            }
            let d = dropped.load(Ordering::Relaxed);
            if d > 0 {
                model.hint = Some(format!("{d} records not shown (the screen fell behind)"));
            }
            if attached && model.events == 0 && started.elapsed() > Duration::from_secs(5) {
                model.hint = Some("the feed carries no events: give the daemon's [feed] types = [\"all\"] for the Ports and Processes panes".into());
            }
            if done.load(Ordering::Relaxed) || STOP.load(Ordering::Relaxed) {
                if attached && done.load(Ordering::Relaxed) && !STOP.load(Ordering::Relaxed) {
                    // The daemon went away: say so, and stay until q.
                    model.health =
                        Some(("gone".into(), "the daemon closed its feed socket".into()));
                } else {
                    return Ok(());
                }
            }
            let second = now / 1_000_000_000;
            let urgent = model.opened != opened;
            let changed = model.version != drawn_version || second != drawn_second;
            if force || (changed && (urgent || last_draw.elapsed() >= FRAME)) {
                terminal.draw(|f| view::render(f, &model, &ui, now))?;
                drawn_version = model.version;
                drawn_second = second;
                opened = model.opened;
                last_draw = Instant::now();
                force = false;
            }
            if !event::poll(Duration::from_millis(50))? {
                continue;
            }
            let ev = event::read()?;
            force = true;
            let Event::Key(k) = ev else { continue };
            if k.kind != KeyEventKind::Press {
                continue;
            }
            if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
                return Ok(());
            }
            if ui.typing {
                match k.code {
                    KeyCode::Enter => ui.typing = false,
                    KeyCode::Esc => {
                        ui.typing = false;
                        ui.filter.clear();
                    }
                    KeyCode::Backspace => {
                        ui.filter.pop();
                    }
                    KeyCode::Char(c) if ui.filter.len() < 64 => ui.filter.push(c),
                    _ => {}
                }
                ui.selected = [0; 3];
                continue;
            }
            if ui.popup != Popup::None {
                if matches!(
                    k.code,
                    KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') | KeyCode::Char('?')
                ) {
                    ui.popup = Popup::None;
                }
                continue;
            }
            let rows = view::rows_in(&model, &ui, now);
            match k.code {
                KeyCode::Char('q') => return Ok(()),
                KeyCode::Tab | KeyCode::Right => ui.next_pane(false),
                KeyCode::BackTab | KeyCode::Left => ui.next_pane(true),
                KeyCode::Down | KeyCode::Char('j') => ui.move_row(true, rows),
                KeyCode::Up | KeyCode::Char('k') => ui.move_row(false, rows),
                KeyCode::PageDown => (0..10).for_each(|_| ui.move_row(true, rows)),
                KeyCode::PageUp => (0..10).for_each(|_| ui.move_row(false, rows)),
                KeyCode::Char('/') => ui.typing = true,
                KeyCode::Esc => ui.filter.clear(),
                KeyCode::Char('s') => ui.sort = ui.sort.next(),
                KeyCode::Char('?') => ui.popup = Popup::Keys,
                KeyCode::Enter if ui.pane == Pane::Incidents && rows > 0 => {
                    ui.popup = Popup::Record
                }
                _ => {}
            }
        }
    })();
    ratatui::restore();
    let _ = std::io::stdout().flush();
    result
}
