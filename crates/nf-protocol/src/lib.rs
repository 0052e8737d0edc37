//! NDJSON events.
