//! The local demo of the whole path (README, "Run the demo"): a busybox image in a real
//! registry → `ipfs-image-operator convert` → CID → `ipfs-image-agent` on 127.0.0.1:5050 →
//! containerd pulls `localhost:5050/ipfs/<CID>` (ctr and CRI) → the container says hello.
//! Everything runs on loopback and is stopped when the demo ends.

use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use testkit::{
    Agent, Containerd, IpfsDaemon, PushFormat, Registry, TestImage, build_busybox_layout,
    push_layout, workspace_binary,
};

fn step(text: &str) {
    eprintln!("\n==> {text}");
}

fn main() -> Result<()> {
    let listen = std::env::var("DEMO_LISTEN").unwrap_or_else(|_| "127.0.0.1:5050".into());
    ensure!(
        std::net::TcpListener::bind(&listen).is_ok(),
        "{listen} is in use: stop what listens there or set DEMO_LISTEN"
    );
    let operator = workspace_binary("ipfs-image-operator");
    let agent_bin = workspace_binary("ipfs-image-agent");

    step("starting an IPFS daemon (loopback only, no bootstrap peers), a registry and containerd");
    let ipfs = IpfsDaemon::start()?;
    eprintln!(
        "    {} API {} (peer {})",
        testkit::kubo_version(),
        ipfs.api_url,
        ipfs.peer_id
    );
    let registry = Registry::start()?;
    eprintln!("    registry http://{}", registry.addr);
    let containerd = Containerd::start()?;
    eprintln!("    containerd {}", containerd.socket.display());

    step("building a busybox image and pushing it to the registry");
    let work = tempfile::tempdir()?;
    let layout = build_busybox_layout(work.path())?;
    let source = format!("{}/demo/busybox:1", registry.addr);
    push_layout(
        &layout,
        TestImage::AMD64,
        &registry,
        "demo/busybox:1",
        PushFormat::Docker,
    )?;
    eprintln!("    pushed {source}");

    step(&format!(
        "ipfs-image-operator convert --plain-http {source}"
    ));
    let out = Command::new(&operator)
        .args([
            "--ipfs-api",
            &ipfs.api_url,
            "convert",
            "--plain-http",
            &source,
        ])
        .output()?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "convert failed");
    let stdout = String::from_utf8(out.stdout)?;
    let cid = stdout
        .lines()
        .last()
        .context("convert printed nothing")?
        .trim()
        .to_owned();
    println!("CID: {cid}");

    step(&format!(
        "ipfs-image-agent serve --listen {listen}, and configure-containerd"
    ));
    let catalog = work.path().join("images.yaml");
    std::fs::write(&catalog, format!("- source: {source}\n  cid: {cid}\n"))?;
    let agent = start_agent(&agent_bin, &ipfs.api_url, &listen, &catalog)?;
    let local_host = listen.replace("127.0.0.1", "localhost");
    let status = Command::new(&agent_bin)
        .args(["configure-containerd", "--config-path"])
        .arg(&containerd.hosts_dir)
        .args([
            "--local-host",
            &local_host,
            "--mirror-endpoint",
            &format!("http://{listen}"),
        ])
        .args(["--registry", &format!("{0}=http://{0}", registry.addr)])
        .status()?;
    ensure!(status.success(), "configure-containerd failed");

    let image = format!("{local_host}/ipfs/{cid}:latest");
    step(&format!("ctr images pull --hosts-dir … {image}"));
    containerd.pull_with_hosts_dir(&image)?;
    step(&format!("ctr run {image} echo hello"));
    let said = containerd.run(&image, &["/bin/busybox", "echo", "hello"])?;
    print!("{said}");
    ensure!(said.trim() == "hello", "the container said {said:?}");

    step(&format!(
        "CRI PullImage {image} (what kubelet calls), then run it"
    ));
    let image_ref = containerd.cri_pull(&image)?;
    eprintln!("    pulled {image_ref}");
    let said = containerd.ctr_ok(&[
        "-n",
        "k8s.io",
        "run",
        "--rm",
        &image,
        "demo-cri",
        "/bin/busybox",
        "echo",
        "hello",
    ])?;
    print!("{said}");
    ensure!(said.trim() == "hello", "the container said {said:?}");

    let served = agent.metric_sum("ipfs_image_agent_bytes_served_total", &[]);
    eprintln!("\nThe agent served {served} bytes from IPFS. Demo complete; stopping everything.");
    if served <= 0.0 {
        bail!("the agent served nothing");
    }
    Ok(())
}

/// The agent on the demo's fixed address (Agent::start picks free ports; the demo wants 5050).
fn start_agent(
    bin: &std::path::Path,
    ipfs_api: &str,
    listen: &str,
    catalog: &std::path::Path,
) -> Result<Agent> {
    Agent::start_on(bin, ipfs_api, listen, Some(catalog), &[])
}
