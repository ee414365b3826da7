//! `watcher top`: a live view of what watcher knows — open incidents,
//! listeners per network namespace, event rates per program and container —
//! built from records (`model`) and drawn with ratatui (`view`). The
//! command itself (terminal, keys, where records come from) is `cli::top`.
pub(crate) mod model;
pub(crate) mod view;
