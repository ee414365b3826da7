//! The screen of `watcher top`: what the model knows, drawn with ratatui.
//! Pure: the same model, state and time draw the same screen (the snapshot
//! tests render into ratatui's `TestBackend`).
use ratatui::{
    layout::{Constraint, Direction, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap},
    Frame,
};

use super::model::{Incident, Model, Source, RATE_SECONDS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pane {
    Incidents,
    Ports,
    Processes,
}

impl Pane {
    pub(crate) const ALL: [Pane; 3] = [Pane::Incidents, Pane::Ports, Pane::Processes];
    fn title(self) -> &'static str {
        match self {
            Pane::Incidents => "Incidents",
            Pane::Ports => "Ports",
            Pane::Processes => "Processes",
        }
    }
}

/// How the processes pane is sorted (`s` cycles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sort {
    Crashes,
    Forks,
    Execs,
    Exits,
    Program,
}

impl Sort {
    pub(crate) fn next(self) -> Sort {
        match self {
            Sort::Crashes => Sort::Forks,
            Sort::Forks => Sort::Execs,
            Sort::Execs => Sort::Exits,
            Sort::Exits => Sort::Program,
            Sort::Program => Sort::Crashes,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Sort::Crashes => "crashes",
            Sort::Forks => "forks",
            Sort::Execs => "execs",
            Sort::Exits => "exits",
            Sort::Program => "program",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Popup {
    None,
    Record,
    Keys,
}

/// What the person chose: pane, rows, filter, sort, popups.
#[derive(Clone, Debug)]
pub(crate) struct Ui {
    pub pane: Pane,
    pub selected: [usize; 3],
    pub filter: String,
    /// Typing a filter after `/`.
    pub typing: bool,
    pub sort: Sort,
    pub popup: Popup,
    pub color: bool,
}

impl Ui {
    pub(crate) fn new(color: bool) -> Ui {
        Ui {
            pane: Pane::Incidents,
            selected: [0; 3],
            filter: String::new(),
            typing: false,
            sort: Sort::Crashes,
            popup: Popup::None,
            color,
        }
    }

    fn idx(&self) -> usize {
        Pane::ALL.iter().position(|p| *p == self.pane).unwrap_or(0)
    }

    pub(crate) fn next_pane(&mut self, back: bool) {
        let i = self.idx();
        self.pane = Pane::ALL[if back { (i + 2) % 3 } else { (i + 1) % 3 }];
    }

    pub(crate) fn move_row(&mut self, down: bool, rows: usize) {
        let i = self.idx();
        let s = &mut self.selected[i];
        *s = if down {
            (*s + 1).min(rows.saturating_sub(1))
        } else {
            s.saturating_sub(1)
        };
    }

    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    fn matches(&self, fields: &[&str]) -> bool {
        let f = self.filter.trim().to_lowercase();
        f.is_empty() || fields.iter().any(|x| x.to_lowercase().contains(&f))
    }
}

fn age(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The incidents the filter lets through, in screen order.
pub(crate) fn incident_rows<'a>(m: &'a Model, ui: &Ui) -> Vec<&'a Incident> {
    m.incidents_newest_first()
        .into_iter()
        .filter(|i| {
            let pid = i.pid.to_string();
            ui.matches(&[
                &i.kind,
                &i.program,
                &pid,
                i.other.as_deref().unwrap_or(""),
                i.container.as_deref().unwrap_or(""),
                i.place.as_deref().unwrap_or(""),
            ])
        })
        .collect()
}

/// Rows of the ports pane: (netns, proto, address, pid, program, container, mark).
pub(crate) fn port_rows(m: &Model, ui: &Ui) -> Vec<[String; 7]> {
    let mut rows: Vec<[String; 7]> = m
        .listeners
        .iter()
        .map(|(k, l)| {
            let addr = if k.address.contains(':') {
                format!("[{}]:{}", k.address, k.port)
            } else {
                format!("{}:{}", k.address, k.port)
            };
            [
                k.netns.to_string(),
                k.transport.clone(),
                addr,
                k.pid.to_string(),
                l.program.clone(),
                l.container.clone().unwrap_or_default(),
                l.trouble.clone().unwrap_or_default(),
            ]
        })
        .collect();
    // Local ports in use per namespace and destination, where they are many.
    let mut busy: Vec<(&(u32, String), &u32)> = m
        .ports_in_use
        .iter()
        .filter(|(_, n)| **n >= super::model::BUSY_PORTS)
        .collect();
    busy.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for ((ns, dest), n) in busy.into_iter().take(5) {
        rows.push([
            ns.to_string(),
            "out".into(),
            format!("→ {dest}"),
            String::new(),
            format!("{n} local ports in use"),
            String::new(),
            "busy".into(),
        ]);
    }
    rows.retain(|r| ui.matches(&[&r[2], &r[3], &r[4], &r[5]]));
    // Fought-over ports first, then by port.
    rows.sort_by(|a, b| {
        b[6].is_empty()
            .cmp(&a[6].is_empty())
            .reverse()
            .then(a[2].cmp(&b[2]))
            .then(a[3].cmp(&b[3]))
    });
    rows
}

/// Rows of the processes pane: program, container, forks, execs, exits, crashes.
pub(crate) fn process_rows(m: &Model, ui: &Ui, now_ns: u64) -> Vec<(String, String, [u32; 4])> {
    let now = now_ns / 1_000_000_000;
    let mut rows: Vec<(String, String, [u32; 4])> = m
        .programs
        .iter()
        .map(|((p, c), r)| (p.clone(), c.clone().unwrap_or_default(), r.totals(now)))
        .filter(|(_, _, t)| t.iter().any(|n| *n > 0))
        .filter(|(p, c, _)| ui.matches(&[p, c]))
        .collect();
    let key = |t: &[u32; 4]| match ui.sort {
        Sort::Forks => t[0],
        Sort::Execs => t[1],
        Sort::Exits => t[2],
        Sort::Crashes | Sort::Program => t[3],
    };
    rows.sort_by(|a, b| {
        if ui.sort == Sort::Program {
            a.0.cmp(&b.0).then(a.1.cmp(&b.1))
        } else {
            key(&b.2)
                .cmp(&key(&a.2))
                .then(b.2.iter().sum::<u32>().cmp(&a.2.iter().sum::<u32>()))
                .then(a.0.cmp(&b.0))
                .then(a.1.cmp(&b.1))
        }
    });
    rows
}

/// Rows in the focused pane (for moving the selection).
pub(crate) fn rows_in(m: &Model, ui: &Ui, now_ns: u64) -> usize {
    match ui.pane {
        Pane::Incidents => incident_rows(m, ui).len(),
        Pane::Ports => port_rows(m, ui).len(),
        Pane::Processes => process_rows(m, ui, now_ns).len(),
    }
}

/// Draw the whole screen.
pub(crate) fn render(f: &mut Frame, m: &Model, ui: &Ui, now_ns: u64) {
    let area = f.area();
    let wide = area.width >= 120 && area.height >= 30;
    let outer = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .split(area);
    status(f, outer[0], m, ui, now_ns);
    footer(f, outer[2], ui);
    if wide {
        let body = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Percentage(45), Constraint::Percentage(55)])
            .split(outer[1]);
        let bottom = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(55), Constraint::Percentage(45)])
            .split(body[1]);
        incidents(f, body[0], m, ui, now_ns, true);
        ports(f, bottom[0], m, ui, true);
        processes(f, bottom[1], m, ui, now_ns, true);
    } else {
        // Small terminals: the focused pane, the others as tabs with their counts.
        let body = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Length(1), Constraint::Min(2)])
            .split(outer[1]);
        let counts = [
            incident_rows(m, ui).len(),
            port_rows(m, ui).len(),
            process_rows(m, ui, now_ns).len(),
        ];
        let mut spans = Vec::new();
        for (i, p) in Pane::ALL.iter().enumerate() {
            let text = format!(" {} ({}) ", p.title(), counts[i]);
            spans.push(if *p == ui.pane {
                Span::styled(text, Style::default().add_modifier(Modifier::REVERSED))
            } else {
                Span::raw(text)
            });
        }
        f.render_widget(Paragraph::new(Line::from(spans)), body[0]);
        match ui.pane {
            Pane::Incidents => incidents(f, body[1], m, ui, now_ns, false),
            Pane::Ports => ports(f, body[1], m, ui, false),
            Pane::Processes => processes(f, body[1], m, ui, now_ns, false),
        }
    }
    match ui.popup {
        Popup::None => {}
        Popup::Keys => keys_popup(f, area),
        Popup::Record => record_popup(f, area, m, ui),
    }
}

fn status(f: &mut Frame, area: Rect, m: &Model, ui: &Ui, now_ns: u64) {
    let source = match &m.source {
        Source::Standalone => "standalone".to_owned(),
        Source::Attached(p) => format!("attached to {p}"),
    };
    let open = m
        .incidents
        .iter()
        .filter(|i| i.resolved_ns.is_none())
        .count();
    let health = match &m.health {
        Some((s, r)) if s != "ok" => (format!("pipeline {s}: {r}"), Color::Red),
        _ => ("pipeline ok".to_owned(), Color::Green),
    };
    let mut spans = vec![
        Span::styled("watcher top", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            " │ {source} │ {:.0} events/s │ lost {} │ ",
            m.events_per_s(now_ns),
            m.lost
        )),
        Span::styled(health.0, ui.fg(health.1)),
        Span::raw(format!(" │ {open} open")),
    ];
    if let Some(h) = &m.hint {
        spans.push(Span::styled(format!(" │ {h}"), ui.fg(Color::Yellow)));
    }
    if !ui.filter.is_empty() || ui.typing {
        spans.push(Span::styled(
            format!(
                " │ filter: {}{}",
                ui.filter,
                if ui.typing { "▏" } else { "" }
            ),
            ui.fg(Color::Yellow),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn footer(f: &mut Frame, area: Rect, ui: &Ui) {
    let text = if ui.typing {
        "type to filter by program, container, pid or port · Enter keep · Esc clear".to_owned()
    } else {
        format!(
            "q quit · Tab pane · ↑↓ row · / filter · s sort ({}) · Enter record · ? keys",
            ui.sort.name()
        )
    };
    f.render_widget(
        Paragraph::new(text).style(Style::default().add_modifier(Modifier::DIM)),
        area,
    );
}

fn block(title: String, focused: bool, ui: &Ui) -> Block<'static> {
    let style = if focused {
        ui.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    Block::default()
        .borders(Borders::ALL)
        .title(title)
        .border_style(style)
}

fn selection(ui: &Ui, pane: Pane, rows: usize) -> TableState {
    let mut st = TableState::default();
    if ui.pane == pane && rows > 0 {
        st.select(Some(ui.selected[ui.idx()].min(rows - 1)));
    }
    st
}

fn highlight(_ui: &Ui) -> Style {
    Style::default().add_modifier(Modifier::REVERSED)
}

fn incidents(f: &mut Frame, area: Rect, m: &Model, ui: &Ui, now_ns: u64, wide: bool) {
    let rows_of = incident_rows(m, ui);
    let open = rows_of.iter().filter(|i| i.resolved_ns.is_none()).count();
    let rows: Vec<Row> = rows_of
        .iter()
        .map(|i| {
            let who = format!("{} ({})", i.program, i.pid);
            let age = match i.resolved_ns {
                Some(_) => "resolved".to_owned(),
                None => age(now_ns.saturating_sub(i.opened_ns)),
            };
            let style = if i.resolved_ns.is_some() {
                Style::default().add_modifier(Modifier::DIM)
            } else if now_ns.saturating_sub(i.opened_ns) < 5_000_000_000 {
                ui.fg(Color::Red).add_modifier(Modifier::BOLD)
            } else {
                ui.fg(Color::Yellow)
            };
            let cells: Vec<Cell> = if wide {
                vec![
                    Cell::from(i.kind.clone()),
                    Cell::from(who),
                    Cell::from(i.other.clone().unwrap_or_default()),
                    Cell::from(i.container.clone().unwrap_or_default()),
                    Cell::from(i.place.clone().unwrap_or_default()),
                    Cell::from(age),
                    Cell::from(i.occurrences.to_string()),
                    Cell::from(i.cause.clone().unwrap_or_default()),
                ]
            } else {
                vec![
                    Cell::from(i.kind.clone()),
                    Cell::from(who),
                    Cell::from(i.place.clone().unwrap_or_default()),
                    Cell::from(age),
                ]
            };
            Row::new(cells).style(style)
        })
        .collect();
    let (header, widths): (Vec<&str>, Vec<Constraint>) = if wide {
        (
            vec![
                "KIND",
                "PROGRAM (PID)",
                "WITH",
                "CONTAINER",
                "PORT / DESTINATION",
                "AGE",
                "N",
                "CAUSE",
            ],
            vec![
                Constraint::Length(20),
                Constraint::Length(22),
                Constraint::Length(34),
                Constraint::Length(16),
                Constraint::Length(24),
                Constraint::Length(9),
                Constraint::Length(4),
                Constraint::Min(10),
            ],
        )
    } else {
        (
            vec!["KIND", "PROGRAM (PID)", "PORT / DEST", "AGE"],
            vec![
                Constraint::Length(20),
                Constraint::Length(22),
                Constraint::Min(12),
                Constraint::Length(9),
            ],
        )
    };
    let n = rows.len();
    let t = Table::new(rows, widths)
        .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(block(
            format!(" Incidents: {open} open "),
            ui.pane == Pane::Incidents,
            ui,
        ))
        .row_highlight_style(highlight(ui));
    let mut st = selection(ui, Pane::Incidents, n);
    f.render_stateful_widget(t, area, &mut st);
}

fn ports(f: &mut Frame, area: Rect, m: &Model, ui: &Ui, wide: bool) {
    let rows_of = port_rows(m, ui);
    let rows: Vec<Row> = rows_of
        .iter()
        .map(|r| {
            let style = match r[6].as_str() {
                "conflict" => ui.fg(Color::Red).add_modifier(Modifier::BOLD),
                "shadowed" | "busy" => ui.fg(Color::Yellow),
                _ => Style::default(),
            };
            let cells: Vec<Cell> = if wide {
                r.iter().map(|c| Cell::from(c.clone())).collect()
            } else {
                [1usize, 2, 3, 4, 6]
                    .iter()
                    .map(|i| Cell::from(r[*i].clone()))
                    .collect()
            };
            Row::new(cells).style(style)
        })
        .collect();
    let (header, widths): (Vec<&str>, Vec<Constraint>) = if wide {
        (
            vec![
                "NETNS",
                "PROTO",
                "ADDRESS",
                "PID",
                "PROGRAM",
                "CONTAINER",
                "",
            ],
            vec![
                Constraint::Length(10),
                Constraint::Length(5),
                Constraint::Length(22),
                Constraint::Length(7),
                Constraint::Length(16),
                Constraint::Length(12),
                Constraint::Min(8),
            ],
        )
    } else {
        (
            vec!["PROTO", "ADDRESS", "PID", "PROGRAM", ""],
            vec![
                Constraint::Length(5),
                Constraint::Length(22),
                Constraint::Length(7),
                Constraint::Min(12),
                Constraint::Length(8),
            ],
        )
    };
    let n = rows.len();
    let listeners = m.listeners.len();
    let t = Table::new(rows, widths)
        .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(block(
            format!(" Ports: {listeners} listening "),
            ui.pane == Pane::Ports,
            ui,
        ))
        .row_highlight_style(highlight(ui));
    let mut st = selection(ui, Pane::Ports, n);
    f.render_stateful_widget(t, area, &mut st);
}

fn processes(f: &mut Frame, area: Rect, m: &Model, ui: &Ui, now_ns: u64, wide: bool) {
    let rows_of = process_rows(m, ui, now_ns);
    let rows: Vec<Row> = rows_of
        .iter()
        .map(|(p, c, t)| {
            let style = if t[3] >= 3 {
                ui.fg(Color::Red)
            } else {
                Style::default()
            };
            let mut cells = vec![Cell::from(p.clone())];
            if wide {
                cells.push(Cell::from(c.clone()));
            }
            cells.extend(t.iter().map(|n| Cell::from(n.to_string())));
            Row::new(cells).style(style)
        })
        .collect();
    let mut header = vec!["PROGRAM"];
    let mut widths = vec![Constraint::Min(12)];
    if wide {
        header.push("CONTAINER");
        widths.push(Constraint::Length(12));
    }
    header.extend(["FORKS", "EXECS", "EXITS", "CRASH"]);
    widths.extend([Constraint::Length(6); 4]);
    let n = rows.len();
    let t = Table::new(rows, widths)
        .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(block(
            format!(" Processes: last {RATE_SECONDS} s, by {} ", ui.sort.name()),
            ui.pane == Pane::Processes,
            ui,
        ))
        .row_highlight_style(highlight(ui));
    let mut st = selection(ui, Pane::Processes, n);
    f.render_stateful_widget(t, area, &mut st);
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn keys_popup(f: &mut Frame, area: Rect) {
    let text = [
        "q, Ctrl-C     quit",
        "Tab, ←→       next / previous pane",
        "↑↓, PgUp/PgDn move in the pane",
        "/             filter: program, container, pid, port",
        "Esc           clear the filter, close this",
        "s             sort the processes (crashes, forks, execs, exits, program)",
        "Enter         the selected incident's whole record",
        "?             these keys",
    ]
    .join("\n");
    let r = centered(area, 76, 12);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(" keys ")),
        r,
    );
}

fn record_popup(f: &mut Frame, area: Rect, m: &Model, ui: &Ui) {
    let rows = incident_rows(m, ui);
    let Some(i) = rows.get(ui.selected[0].min(rows.len().saturating_sub(1))) else {
        return;
    };
    let rec = &i.record;
    let mut lines = vec![
        Line::from(Span::styled(
            format!(
                "{} {} ({}), {} occurrence(s)",
                rec.kind, rec.state, rec.id, rec.count
            ),
            Style::default().add_modifier(Modifier::BOLD),
        )),
        Line::from(format!(
            "first seen {}, last seen {}",
            rec.first_seen, rec.last_seen
        )),
        Line::from(""),
        Line::from(rec.summary.clone()),
        Line::from(""),
    ];
    for p in &rec.processes {
        let c = p
            .container
            .as_ref()
            .map(|c| format!(" in container {}", c.label()))
            .unwrap_or_default();
        lines.push(Line::from(format!(
            "{:<10} pid {} {}{}{}",
            p.role,
            p.process.pid,
            p.process
                .command_line
                .clone()
                .unwrap_or_else(|| p.process.name.clone()),
            p.address
                .as_ref()
                .map(|a| format!(" on {a}"))
                .unwrap_or_default(),
            c
        )));
    }
    lines.push(Line::from(""));
    for (k, v) in rec.details.iter() {
        lines.push(Line::from(format!("{k}: {v}")));
    }
    let r = centered(
        area,
        area.width.saturating_sub(8).max(40),
        area.height.saturating_sub(4).max(10),
    );
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" finding (Esc closes) "),
        ),
        r,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::record::Record;
    use ratatui::{backend::TestBackend, Terminal};

    fn model() -> Model {
        let mut m = Model::new(Source::Standalone);
        for l in include_str!("testdata/stream.ndjson").lines() {
            let r: Record = serde_json::from_str(l).unwrap();
            m.apply(&r);
        }
        m
    }

    fn screen(m: &Model, ui: &Ui, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        let now = m.now_ns + 500_000_000;
        t.draw(|f| render(f, m, ui, now)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol().to_owned())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_wide_screen_shows_every_pane() {
        let m = model();
        insta::assert_snapshot!("wide", screen(&m, &Ui::new(false), 200, 60));
    }

    #[test]
    fn the_small_screen_shows_the_focused_pane_and_tabs() {
        let m = model();
        let mut ui = Ui::new(false);
        insta::assert_snapshot!("small_incidents", screen(&m, &ui, 80, 24));
        ui.next_pane(false);
        insta::assert_snapshot!("small_ports", screen(&m, &ui, 80, 24));
        ui.next_pane(false);
        insta::assert_snapshot!("small_processes", screen(&m, &ui, 80, 24));
    }

    #[test]
    fn a_filter_keeps_the_rows_that_match() {
        let m = model();
        let mut ui = Ui::new(false);
        ui.filter = "8080".into();
        let s = screen(&m, &ui, 200, 60);
        assert!(
            s.contains("port_conflict") && !s.contains("respawn_storm"),
            "{s}"
        );
        assert!(s.contains("python3") && !s.contains("resolver"), "{s}");
    }

    #[test]
    fn enter_shows_the_whole_record_and_question_mark_the_keys() {
        let m = model();
        let mut ui = Ui::new(false);
        ui.popup = Popup::Record;
        insta::assert_snapshot!("record", screen(&m, &ui, 120, 40));
        ui.popup = Popup::Keys;
        let s = screen(&m, &ui, 80, 24);
        assert!(s.contains("the selected incident's whole record"), "{s}");
    }

    #[test]
    fn tiny_terminals_and_every_popup_draw_without_panicking() {
        let m = model();
        for (w, h) in [(1, 1), (10, 3), (20, 5), (40, 10), (79, 23)] {
            for popup in [Popup::None, Popup::Record, Popup::Keys] {
                let mut ui = Ui::new(true);
                ui.popup = popup;
                ui.filter = "x".into();
                for _ in 0..3 {
                    screen(&m, &ui, w, h);
                    ui.next_pane(false);
                }
            }
        }
    }

    #[test]
    fn sorting_cycles_through_the_counts() {
        let m = model();
        let mut ui = Ui::new(false);
        let now = m.now_ns;
        let first = |ui: &Ui| process_rows(&m, ui, now).first().map(|r| r.0.clone());
        assert_eq!(first(&ui).as_deref(), Some("api"));
        ui.sort = Sort::Program;
        assert_eq!(first(&ui).as_deref(), Some("api"));
        for _ in 0..5 {
            ui.sort = ui.sort.next();
        }
        assert_eq!(ui.sort, Sort::Program);
    }
}
