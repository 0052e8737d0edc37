//! The wire format, checked: every kind round-trips and reads as documented.

use super::*;

#[test]
fn rfc3339_known_dates() {
    assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    assert_eq!(rfc3339(1_795_462_323, 123), "2026-11-23T19:32:03.123Z");
}

#[test]
fn events_round_trip_through_ndjson() {
    let mut buf = Vec::new();
    let mut w = EventWriter::new(&mut buf);
    let events = vec![
        Event::GenerateToken {
            index: 0,
            id: 42,
            text: "Hi".into(),
        },
        Event::Error {
            code: ErrorCode::BadInput,
            message: "no such file".into(),
            hint: Some("check the path".into()),
        },
        Event::Progress {
            task: "load".into(),
            done: 1,
            total: None,
            unit: "files".into(),
        },
    ];
    for e in &events {
        w.emit(e.clone()).unwrap();
    }
    let text = String::from_utf8(buf).unwrap();
    assert_eq!(text.lines().count(), 3);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["v"], 1);
    assert_eq!(first["type"], "generate.token");
    assert_eq!(first["id"], 42);
    let back: Vec<Event> = read_events(text.as_bytes())
        .map(|e| e.unwrap().event)
        .collect();
    assert_eq!(back, events);
}

#[test]
fn train_events_from_before_precision_still_parse() {
    let old = r#"{"v":1,"type":"train.start","ts":"x","run_dir":"r","method":"lora","trainable_params":1,"total_params":2,"steps":3,"start_step":0,"batch_size":1,"seq_len":8,"grad_accum":1,"tokens_per_step":8,"train_tokens":100,"val_tokens":10,"resumed":false}"#;
    let e = read_events(old.as_bytes()).next().unwrap().unwrap().event;
    let Event::TrainStart {
        precision,
        isa,
        kernel,
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (precision.as_str(), isa.as_str(), kernel.as_str()),
        ("", "", "")
    );
    let old = r#"{"v":1,"type":"train.done","ts":"x","reason":"completed","steps":1,"final_step":1,"final_loss":null,"val_loss":null,"wall_s":1.0,"ms_per_step":1.0,"tokens_per_s":1.0,"tflops":0.1,"utilization":0.5,"ms":{},"output":"o"}"#;
    let e = read_events(old.as_bytes()).next().unwrap().unwrap().event;
    let Event::TrainDone {
        peak_gflops,
        peak_under_measured,
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!((peak_gflops, peak_under_measured), (None, false));
    // A bench result without the optional tags writes none.
    let mut buf = Vec::new();
    EventWriter::new(&mut buf)
        .emit(Event::BenchResult {
            test: "pp8".into(),
            threads: 1,
            value: 1.0,
            stddev: 0.0,
            unit: "tokens/s".into(),
            reps: 1,
            isa: None,
            precision: None,
        })
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(
        !text.contains("isa") && !text.contains("precision"),
        "{text}"
    );
}

#[test]
fn unknown_kinds_are_per_line_errors() {
    let input = "{\"v\":1,\"type\":\"future.kind\",\"ts\":\"x\"}\n\n{\"v\":1,\"type\":\"generate.token\",\"ts\":\"x\",\"index\":0,\"id\":1,\"text\":\"a\"}\n";
    let r: Vec<_> = read_events(input.as_bytes()).collect();
    assert_eq!(r.len(), 2);
    assert!(r[0].is_err());
    assert!(r[1].is_ok());
}
