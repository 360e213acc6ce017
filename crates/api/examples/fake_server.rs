//! The API server with a fake VMM that accepts every well-formed request,
//! for checking `openapi.yaml` against the server (schemathesis) and for
//! trying clients: `cargo run -p api --example fake_server -- /tmp/api.sock`.

use api::model::{
    Balloon, BalloonStats, FirecrackerVersion, FullVmConfiguration, InstanceInfo, InstanceState,
};
use api::{Backend, Fault, Reply, Request, Server};
use std::sync::{Arc, Mutex};

/// Remembers the machine config and balloon, answers every GET.
#[derive(Default)]
struct Permissive {
    config: Mutex<FullVmConfiguration>,
}

impl Backend for Permissive {
    fn handle(&self, request: Request) -> Result<Reply, Fault> {
        let mut c = self
            .config
            .lock()
            .map_err(|_| Fault::new("state lock poisoned"))?;
        match request {
            Request::GetInstanceInfo => Reply::json(&InstanceInfo {
                app_name: "vessel".into(),
                id: "fake".into(),
                state: InstanceState::NotStarted,
                vmm_version: env!("CARGO_PKG_VERSION").into(),
            }),
            Request::GetVersion => Reply::json(&FirecrackerVersion {
                firecracker_version: env!("CARGO_PKG_VERSION").into(),
            }),
            Request::GetVmConfig => Reply::json(&*c),
            Request::GetMachineConfig => Reply::json(&c.machine_config.clone().unwrap_or_default()),
            Request::PutMachineConfig(m) => {
                c.machine_config = Some(m);
                Ok(Reply::NoContent)
            }
            Request::PatchMachineConfig(p) => {
                let m = c.machine_config.clone().unwrap_or_default().patched(&p);
                m.validate()?;
                c.machine_config = Some(m);
                Ok(Reply::NoContent)
            }
            Request::PutBalloon(b) => {
                c.balloon = Some(b);
                Ok(Reply::NoContent)
            }
            Request::GetBalloon => Reply::json(&balloon(&c)?),
            Request::GetBalloonStats => {
                let b = balloon(&c)?;
                Reply::json(&BalloonStats {
                    target_mib: b.amount_mib,
                    target_pages: b.amount_mib.saturating_mul(256),
                    ..Default::default()
                })
            }
            _ => Ok(Reply::NoContent),
        }
    }
}

fn balloon(c: &FullVmConfiguration) -> Result<Balloon, Fault> {
    c.balloon
        .clone()
        .ok_or_else(|| Fault::new("no balloon device: PUT /balloon first"))
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: fake_server SOCKET_PATH");
        std::process::exit(2);
    };
    let server = match Server::bind(&path, api::DEFAULT_MAX_PAYLOAD) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fake_server: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = server.run(Arc::new(Permissive::default())) {
        eprintln!("fake_server: {e}");
        std::process::exit(1);
    }
}
