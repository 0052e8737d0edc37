//! The studio's request handling: a real server on loopback, in this process, fed
//! requests whose method, path and body are mutated while the Host, Origin and token stay
//! right, so the inputs get past the guard to the routes' own parsing. The server runs
//! commands with `/bin/true` in place of `neuralforge`, so a request that would start a
//! job or a run starts one that ends at once.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use nf_studio::Options;

use crate::{Harness, Setup, Target, Verdict};

pub const STUDIO: Target = Target {
    name: "studio",
    what: "studio requests: method, path and JSON or upload body, with a valid token",
    setup: studio_setup,
};

struct StudioHarness {
    seeds: Vec<Vec<u8>>,
    addr: SocketAddr,
    token: String,
}

const SEEDS: &[&str] = &[
    "POST /api/train\n{\"model\":\"m\",\"dataset\":\"d\",\"method\":\"lora\",\"steps\":10,\"lora_rank\":8,\"lr\":0.001,\"precision\":\"bf16\",\"seq_len\":128}",
    "POST /api/train/estimate\n{\"model\":\"m\",\"dataset\":\"d\",\"method\":\"full\"}",
    "POST /api/ingest\n{\"name\":\"notes\",\"model\":\"m\",\"paths\":[\"/tmp/none\"],\"seq_len\":256,\"force\":true}",
    "POST /api/models/import\n{\"path\":\"/tmp/none.gguf\",\"name\":\"x\"}",
    "POST /api/models/pull\n{\"repo\":\"org/model\",\"revision\":\"main\",\"include\":[\"*.json\"]}",
    "POST /api/generate\n{\"model\":\"m\",\"prompt\":\"hi\",\"chat\":true,\"system\":\"s\",\"history\":[{\"role\":\"user\",\"content\":\"a\"}],\"max_tokens\":4,\"temperature\":0.7,\"top_p\":0.9,\"seed\":1}",
    "PUT /api/uploads/u1/notes.txt\nThe patient was seen on Monday.",
    "GET /api/runs/r1/events\n",
    "POST /api/runs/r1/resume\n",
    "GET /api/audit?since=2026-01-01&command=train&result=ok\n",
    "GET /api/datasets/notes\n",
    "POST /api/jobs/1/cancel\n",
];

fn studio_setup(s: &Setup) -> Result<Box<dyn Harness>, String> {
    let cli = ["/bin/true", "/usr/bin/true"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("no /bin/true to stand in for the CLI")?;
    let opts = Options {
        host: [127, 0, 0, 1].into(),
        port: 0,
        home: s.work.join("home"),
        cli,
    };
    let (tx, rx) = mpsc::channel();
    // The server runs until the process ends, like the studio itself.
    std::thread::Builder::new()
        .name("fuzz-studio".into())
        .spawn(move || {
            let _ = nf_studio::serve(opts, |ready| {
                let _ = tx.send(ready.clone());
            });
        })
        .map_err(|e| e.to_string())?;
    let ready = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| "the studio did not start")?;
    let token = ready
        .url
        .split_once("token=")
        .ok_or("no token in the studio's URL")?
        .1
        .to_string();
    Ok(Box::new(StudioHarness {
        seeds: SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect(),
        addr: ready.addr,
        token,
    }))
}

impl StudioHarness {
    /// Sends one request and returns the status, or `None` if no HTTP answer came.
    fn send(&self, method: &[u8], path: &[u8], body: &[u8]) -> Option<u16> {
        let mut s = TcpStream::connect(self.addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let port = self.addr.port();
        let mut req = Vec::with_capacity(body.len() + 512);
        req.extend_from_slice(method);
        req.push(b' ');
        req.extend_from_slice(path);
        req.extend_from_slice(
            format!(
                " HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                self.token,
                body.len()
            )
            .as_bytes(),
        );
        req.extend_from_slice(body);
        // The server may answer and close before reading a body it refuses.
        let _ = s.write_all(&req);
        let mut head = [0u8; 12];
        let mut got = 0;
        while got < head.len() {
            match s.read(&mut head[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        std::str::from_utf8(&head[..got])
            .ok()?
            .strip_prefix("HTTP/1.1 ")?
            .get(..3)?
            .parse()
            .ok()
    }
}

impl Harness for StudioHarness {
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn dictionary(&self) -> &[&'static [u8]] {
        &[
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"",
            b":",
            b",",
            b"..",
            b"/",
            b"%2e%2e",
            b"%2F",
            b"%00",
            b"\\u0000",
            b"\r\n",
            b"?",
            b"&",
            b"token=",
            b"\"model\"",
            b"\"dataset\"",
            b"\"paths\"",
            b"\"upload\"",
            b"\"history\"",
            b"\"run\"",
            b"1e999",
            b"-1",
            b"18446744073709551615",
            b"null",
            b"true",
        ]
    }
    fn run(&mut self, input: &[u8]) -> Verdict {
        let (line, body) = match input.iter().position(|&b| b == b'\n') {
            Some(i) => (&input[..i], &input[i + 1..]),
            None => (input, &[][..]),
        };
        let (method, path) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (&b"POST"[..], line),
        };
        let status = self.send(method, path, body);
        // Whatever that request did, the server must still answer the next one.
        let alive = self.send(b"GET", b"/api/info", b"");
        assert_eq!(
            alive,
            Some(200),
            "the studio stopped answering after {:?}",
            String::from_utf8_lossy(line)
        );
        // Refused means the request's own syntax was: a malformed line or header (400), a
        // body too large (413), or JSON that is not the route's request (415, 422). Any
        // other answer came from the route's logic, after parsing.
        match status {
            Some(400 | 413 | 415 | 422) | None => Verdict::Refused,
            Some(_) => Verdict::Accepted,
        }
    }
}
