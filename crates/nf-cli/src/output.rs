//! Where output goes: human text on stdout, or NDJSON events with `--json`.

use std::io::{self, Stdout, Write};

use nf_protocol::{Event, EventWriter};

pub struct Output {
    events: Option<EventWriter<Stdout>>,
}

impl Output {
    pub fn new(json: bool) -> Output {
        Output {
            events: json.then(|| EventWriter::new(io::stdout())),
        }
    }

    pub fn is_json(&self) -> bool {
        self.events.is_some()
    }

    /// Emits an event in `--json` mode; does nothing otherwise.
    pub fn event(&mut self, event: impl FnOnce() -> Event) -> io::Result<()> {
        match &mut self.events {
            Some(w) => w.emit(event()),
            None => Ok(()),
        }
    }

    /// Writes human text to stdout (only outside `--json` mode) and flushes, so streamed
    /// tokens appear as they are generated.
    pub fn text(&mut self, s: &str) -> io::Result<()> {
        if self.events.is_none() {
            let mut out = io::stdout().lock();
            out.write_all(s.as_bytes())?;
            out.flush()?;
        }
        Ok(())
    }
}
