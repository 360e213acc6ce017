//! The guest's userspace recipe: the `/init` script, the small files under
//! /etc, the poweroff wrappers, and the tree that holds them with busybox
//! and the kernel modules. [`RECIPE_VERSION`] is part of the cache key: bump
//! it whenever anything here changes what ends up in the image.

use crate::modules::{self, Module};
use crate::tree::{Node, Tree, TreeError};

/// Version of this recipe; part of the cache key.
pub const RECIPE_VERSION: u32 = 12;

/// The kernel command line the default guest boots with. `panic=-1` makes
/// a kernel panic reboot at once, which the VMM treats as a failed run
/// (a clean end is an ACPI power-off); `quiet` keeps boot messages out of a
/// command's output (errors still print). `cryptomgr.notests` skips the
/// crypto API's self-tests of every algorithm it registers: they change
/// nothing about how the guest runs, and on Debian's kernel they are two
/// thirds of all boot instructions (RSA test vectors through the generic
/// C bignum code: 1.29e9 instructions to userspace with them, 0.42e9
/// without), seconds on an engine without hardware help.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1 quiet cryptomgr.notests";

/// A file only the initramfs has.
pub const INITRAMFS_MARKER: &str = "etc/vessel-initramfs";

/// The `/init` script, run by busybox sh as PID 1. See `cmdline.rs` for the
/// `vessel.cmd` contract it implements.
pub const INIT_SCRIPT: &str = r#"#!/bin/sh
# vessel guest init: mount the kernel filesystems, load the modules for the
# devices present, then run vessel.cmd or an interactive shell; power off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
umask 022

# (This busybox has no mountpoint applet.)
mounted() { grep -q "^[^ ]* $1 " /proc/mounts 2>/dev/null; }
mounted /proc || mount -t proc -o nosuid,nodev,noexec proc /proc
mounted /sys || mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mounted /dev || mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mounted /dev/pts || mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
mounted /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd

cmd=
agent=
tty=
term=
host=vessel
modules=present
root=
rootfstype=ext4
rootmode=ro
set -f
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vessel.cmd=*) cmd=${arg#vessel.cmd=} ;;
        vessel.agent=*) agent=${arg#vessel.agent=} ;;
        vessel.tty=*) tty=${arg#vessel.tty=} ;;
        vessel.term=*) term=${arg#vessel.term=} ;;
        vessel.hostname=*) host=${arg#vessel.hostname=} ;;
        vessel.modules=*) modules=${arg#vessel.modules=} ;;
        root=*) root=${arg#root=} ;;
        rootfstype=*) rootfstype=${arg#rootfstype=} ;;
        rw) rootmode=rw ;;
        ro) rootmode=ro ;;
    esac
done
set +f
hostname "$host"
ip link set lo up 2>/dev/null

# Modules: by default only those for the devices present, matched through
# modules.alias (PCI first: virtio_pci creates the virtio devices).
# vessel.modules=all loads every shipped module; vessel.modules=none none.
load_for() {
    aliases=$(cat "$@" 2>/dev/null)
    [ -n "$aliases" ] && modprobe -qa $aliases
}
case "$modules" in
    all)
        names=
        for f in $(cut -d: -f1 /lib/modules/$(uname -r)/modules.dep); do
            n=${f##*/}
            names="$names ${n%.ko}"
        done
        modprobe -qa $names
        ;;
    none) ;;
    *)
        load_for /sys/bus/pci/devices/*/modalias
        load_for /sys/bus/virtio/devices/*/modalias
        # An IDE controller (ata_piix): its disks appear later, as SCSI
        # disks, so their driver is loaded now.
        [ -d /sys/bus/pci/drivers/ata_piix ] && modprobe -q sd_mod
        ;;
esac

# A disk root (root= on the command line): the initramfs has loaded the
# drivers; mount it and hand over to its /sbin/init, this same script.
if [ -e /etc/vessel-initramfs ] && [ -n "$root" ]; then
    dev=$root
    i=0
    while [ $i -lt 100 ]; do
        case "$root" in
            LABEL=*|UUID=*) dev=$(findfs "$root" 2>/dev/null) ;;
        esac
        [ -n "$dev" ] && [ -b "$dev" ] && break
        sleep 0.1
        i=$((i + 1))
    done
    mkdir -p /newroot
    if [ -n "$dev" ] && mount -t "$rootfstype" -o "$rootmode" "$dev" /newroot; then
        for m in dev proc sys run; do
            mount --move /$m /newroot/$m
        done
        exec switch_root /newroot /sbin/init
    fi
    echo "vessel init: cannot mount root $root, staying in the initramfs" > /dev/console
fi
# A read-only disk root still gets a writable /tmp.
{ touch /tmp/.vessel-w && rm -f /tmp/.vessel-w; } 2>/dev/null || mount -t tmpfs -o mode=1777 tmpfs /tmp

# --- network (vessel.net=ADDR/PREFIX[,gw=GW][,dns=DNS][,dev=IF], repeatable) ---
# The VMM passes the address of each interface it configures (user
# networking: 10.0.2.15/24 via 10.0.2.2, DNS 10.0.2.3; a TAP with ip=);
# dev= defaults to eth0. A dns= becomes /etc/resolv.conf.
net_list=
set -f
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vessel.net=*) net_list="$net_list ${arg#vessel.net=}" ;;
    esac
done
for net in $net_list; do
    net_addr= net_gw= net_dns= net_dev=eth0
    IFS=,
    for opt in $net; do
        case "$opt" in
            gw=*) net_gw=${opt#gw=} ;;
            dns=*) net_dns=${opt#dns=} ;;
            dev=*) net_dev=${opt#dev=} ;;
            *) net_addr=$opt ;;
        esac
    done
    unset IFS
    if ip link set "$net_dev" up 2>/dev/null && ip addr add "$net_addr" dev "$net_dev"; then
        [ -n "$net_gw" ] && ip route add default via "$net_gw" dev "$net_dev"
        [ -n "$net_dns" ] && { echo "nameserver $net_dns" > /etc/resolv.conf; } 2>/dev/null
    else
        echo "vessel init: cannot configure $net_dev with $net_addr" > /dev/console
    fi
done
set +f
# --- end network ---

# --- shared directories (vessel.fs=TAG:DIR[:ro],...: vessel run -v) ---
# Each TAG is a virtio-fs device (its driver was loaded above with the
# others); DIR is made when missing. A :ro share is mounted read-only, and
# the device refuses writes to it in any case.
fs_list=
set -f
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vessel.fs=*) fs_list=${arg#vessel.fs=} ;;
    esac
done
for share in $(echo "$fs_list" | sed 's/,/ /g'); do
    fs_tag=${share%%:*}
    fs_dir=${share#*:}
    fs_opt=rw
    case "$fs_dir" in
        *:ro) fs_dir=${fs_dir%:ro}; fs_opt=ro ;;
    esac
    { mkdir -p "$fs_dir" && mount -t virtiofs -o "$fs_opt" "$fs_tag" "$fs_dir"; } ||
        echo "vessel init: cannot mount shared directory $fs_tag on $fs_dir" > /dev/console
done
set +f
# --- end shared directories ---

# Say something on the console, and on ttyS0 too when it is not the console.
say() {
    echo "$1" > /dev/console
    case " $(cat /sys/class/tty/console/active 2>/dev/null) " in
        *" ttyS0 "*) ;;
        *) { echo "$1" > /dev/ttyS0; } 2>/dev/null ;;
    esac
}

if [ -n "$cmd" ]; then
    # Byte-exact output: no \n -> \r\n on the console while the command runs.
    stty -onlcr < /dev/console 2>/dev/null
    # The VMM asked for the agent on a root without it: the command's
    # output comes on the console after all.
    if [ "$agent" = 1 ] && [ ! -x /bin/vessel-agent ]; then
        say VESSEL-NO-AGENT
        agent=
    fi
    say VESSEL-GUEST-READY
    if script=$(echo "$cmd" | base64 -d); then
        # The session leader must outlive the command's output: when a
        # session leader exits, Linux hangs up its tty, and the serial
        # driver throws away whatever it has not sent yet. So the leader
        # is a shell that runs the script, waits for the console to drain
        # (stty sets termios with TCSADRAIN), and only then exits.
        # Ctrl+Alt+Del (the VMM's SendCtrlAltDel) signals PID 1 instead of
        # resetting at once: sync and power off cleanly. The command runs in
        # the background (cttyhack gives it the console) so the trap runs
        # while it is still going.
        echo 0 > /proc/sys/kernel/ctrl-alt-del 2>/dev/null
        trap 'say "vessel init: Ctrl+Alt+Del: powering off"; sync; poweroff -f' INT
        if [ "$agent" = 1 ] && [ -x /bin/vessel-agent ]; then
            # --- vessel-agent (vessel.agent=1) ---
            # The command's stdin, stdout, stderr and status travel on
            # vsock streams to the host (see crates/guest/agent); with
            # vessel.tty=ROWSxCOLS it runs on a pty of that size. The
            # console keeps only the markers and the agent's own errors.
            if [ -n "$tty" ]; then
                TERM=${term:-linux} setsid /bin/vessel-agent --tty "$tty" /bin/sh -c "$script" < /dev/null &
            else
                setsid /bin/vessel-agent /bin/sh -c "$script" < /dev/null &
            fi
        else
            setsid cttyhack /bin/sh -c '/bin/sh -c "$1"; s=$?; stty -onlcr 2>/dev/null; exit $s' vessel-cmd "$script" &
        fi
        wait $!
        status=$?
    else
        echo "vessel init: vessel.cmd is not valid base64" > /dev/console
        status=125
    fi
    say "VESSEL-EXIT-STATUS=$status"
    # stty waits for the console's output to drain (TCSADRAIN) before we
    # power off, so the tail of the output is not lost.
    stty onlcr < /dev/console 2>/dev/null
    sync
    poweroff -f
    exit 1 # no power-off: ending PID 1 panics, which reboots (panic=-1)
fi
# Interactive: busybox init becomes PID 1 and starts the shell from
# /etc/inittab, so that `poweroff`, `reboot` and `halt` (which signal PID 1)
# work; leaving the shell powers off too. The console takes the host
# terminal's size (vessel.tty=ROWSxCOLS) and TERM, which busybox init
# passes on when it is set.
if [ -n "$tty" ]; then
    stty rows "${tty%x*}" cols "${tty#*x}" < /dev/console 2>/dev/null
fi
[ -n "$term" ] && export TERM="$term"
say VESSEL-GUEST-READY
exec /bin/busybox init
"#;

// --- container images (`vessel run --image`, crates/guest/src/oci) ---

/// Where [`OCI_EXEC_SCRIPT`] lives in the initramfs (`oci::launch::HELPER`).
pub const OCI_EXEC_PATH: &str = "sbin/vessel-oci-exec";

/// `vessel-oci-exec WORKDIR USER ENV... -- ARGV...`: runs ARGV in the
/// container image on /dev/vda, as the command of `vessel.cmd` (the words
/// come from `oci::launch::command`). The image is mounted read-only under
/// a tmpfs overlay (a run never changes the cached disk); the initramfs's
/// busybox, bind-mounted at /.vessel/busybox, does the chroot, the working
/// directory, the clean environment and the user switch (start-stop-daemon
/// -c), so images without a shell of their own (FROM scratch) run too.
pub const OCI_EXEC_SCRIPT: &str = r#"#!/bin/sh
fail() { echo "vessel: $*" >&2; exit 125; }
[ $# -ge 3 ] || fail "usage: vessel-oci-exec WORKDIR USER ENV... -- ARGV..."
wd=$1 user=$2
shift 2
base=/run/vessel-image
r=/newroot
mkdir -p $base/lower $base/rw $r
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o ro /dev/vda $base/lower || fail "cannot mount the image's disk /dev/vda"
modprobe -q overlay 2>/dev/null
mount -t tmpfs -o mode=0755 tmpfs $base/rw && mkdir -p $base/rw/upper $base/rw/work
if ! mount -t overlay -o lowerdir=$base/lower,upperdir=$base/rw/upper,workdir=$base/rw/work overlay $r 2>/dev/null; then
    echo "vessel: no overlayfs here: the image's root file system is read-only" >&2
    mount --bind $base/lower $r || fail "cannot mount the image's root"
fi
mount -t proc -o nosuid,nodev,noexec proc $r/proc || fail "cannot mount /proc in the image"
mount -t sysfs -o nosuid,nodev,noexec sysfs $r/sys
mount --rbind /dev $r/dev || fail "cannot mount /dev in the image"
mount --bind /bin/busybox $r/.vessel/busybox || fail "cannot mount busybox in the image"
# The guest's network files, as Docker bind-mounts them, where the image
# has a plain file or nothing there (never through a link out of it).
for f in resolv.conf hosts hostname; do
    [ -f /etc/$f ] && [ ! -L $r/etc ] && [ ! -L $r/etc/$f ] || continue
    { [ -e $r/etc/$f ] || { mkdir -p $r/etc && : > $r/etc/$f; }; } 2>/dev/null &&
        mount --bind /etc/$f $r/etc/$f 2>/dev/null
done

# USER[:GROUP] -> uid, gid and home, names from the image's /etc/passwd
# and /etc/group; a numeric uid needs no entry (Docker's rule).
entry() { [ -f "$r/etc/$1" ] && awk -F: -v k="$2" -v v="$3" '$k == v { print; exit }' "$r/etc/$1"; }
u=${user%%:*} g=
case "$user" in *:*) g=${user#*:} ;; esac
[ -n "$u" ] || u=0
case "$u" in
    *[!0-9]*) pw=$(entry passwd 1 "$u"); [ -n "$pw" ] || fail "user $u is not in the image's /etc/passwd" ;;
    *) pw=$(entry passwd 3 "$u") ;;
esac
uid=$u
[ -n "$pw" ] && uid=$(echo "$pw" | cut -d: -f3)
home=$(echo "$pw" | cut -d: -f6)
[ -n "$home" ] || home=/
if [ -z "$g" ]; then
    gid=$(echo "$pw" | cut -d: -f4)
    [ -n "$gid" ] || gid=0
else
    case "$g" in
        *[!0-9]*) gr=$(entry group 1 "$g"); [ -n "$gr" ] || fail "group $g is not in the image's /etc/group"
            gid=$(echo "$gr" | cut -d: -f3) ;;
        *) gid=$g ;;
    esac
fi
case "$uid:$gid" in *[!0-9:]*|:*|*:) fail "bad user $user" ;; esac
# start-stop-daemon -c looks the uid up: give an unnamed one an entry in
# the overlay (never on the disk).
if [ "$uid" != 0 ] && [ -z "$(entry passwd 3 "$uid")" ]; then
    mkdir -p $r/etc && echo "vessel-$uid:x:$uid:$gid::$home:/nonexistent" >> $r/etc/passwd ||
        fail "uid $uid has no /etc/passwd entry and the image is read-only"
fi

# Runs in the image: enter the working directory (made when missing, as
# Docker does), find ARGV[0] on the image's PATH (busybox would otherwise
# prefer its own applets), switch user and exec, keeping argv[0].
inner='wd=$1 uid=$2 gid=$3; shift 3
cd "$wd" 2>/dev/null || { /.vessel/busybox mkdir -p "$wd" && cd "$wd"; } ||
    { echo "vessel: cannot enter the working directory $wd" >&2; exit 126; }
p=$1
case "$p" in
    */*) ;;
    *) p=; set -f; IFS=:
       for d in $PATH; do
           [ -f "${d:-.}/$1" ] && [ -x "${d:-.}/$1" ] && { p=${d:-.}/$1; break; }
       done
       unset IFS; set +f
       [ -n "$p" ] || { echo "vessel: $1: not found in the image (PATH=$PATH)" >&2; exit 127; } ;;
esac
a0=$1; shift
as=; [ "$uid:$gid" = 0:0 ] || as="-c $uid:$gid"
exec /.vessel/busybox start-stop-daemon -S -q -p /nonexistent/vessel.pid -x "$p" -a "$a0" $as -- "$@"'

# "$@" is ENV... -- ARGV...: put the inner script's words at the "--".
n=$#
seen=
while [ $n -gt 0 ]; do
    a=$1
    shift
    n=$((n - 1))
    if [ -z "$seen" ] && [ "$a" = "--" ]; then
        seen=1
        set -- "$@" /.vessel/busybox sh -c "$inner" vessel-exec "$wd" "$uid" "$gid"
    else
        set -- "$@" "$a"
    fi
done
[ -n "$seen" ] || fail "no -- before the command"
exec chroot $r /.vessel/busybox env -i "HOME=$home" "HOSTNAME=$(hostname)" "$@"
"#;

/// busybox init's table for the interactive console: one shell on the
/// console, then power-off; Ctrl+Alt+Del powers off cleanly. `setsid cttyhack` makes the console the shell's
/// controlling tty, for job control and Ctrl-C. `poweroff`, `reboot` and
/// `halt` do what they say: busybox init asks the kernel to power off,
/// reset (the VMM boots the guest again, or ends with --no-reboot) or halt
/// (the VMM ends the run when every vCPU has stopped).
const INITTAB: &str =
    "::once:/etc/vessel-shell\n::ctrlaltdel:/bin/busybox poweroff\n::shutdown:/bin/busybox sync\n";

const SHELL_SCRIPT: &str = "#!/bin/sh
echo 'vessel guest: exit the shell or type poweroff to stop the VM'
setsid cttyhack /bin/sh -l
sync
exec /bin/busybox poweroff -f
";

const PROFILE: &str = r#"export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PS1='\h:\w\$ '
"#;

/// Applets linked when `busybox --list-full` cannot be run on this host.
pub const FALLBACK_APPLETS: &[&str] = &[
    "bin/sh",
    "bin/ash",
    "bin/cat",
    "bin/echo",
    "bin/ls",
    "bin/mount",
    "bin/umount",
    "bin/mkdir",
    "bin/ln",
    "bin/rm",
    "bin/cp",
    "bin/mv",
    "bin/sed",
    "bin/grep",
    "bin/hostname",
    "bin/stty",
    "bin/sync",
    "bin/uname",
    "bin/dmesg",
    "bin/ps",
    "bin/sleep",
    "bin/base64",
    "sbin/insmod",
    "sbin/modprobe",
    "sbin/lsmod",
    "sbin/ip",
    "usr/bin/setsid",
    "bin/cttyhack",
    "usr/bin/env",
    "usr/bin/id",
];

/// Everything the guest's userspace needs besides busybox and modules.
fn base_tree(tree: &mut Tree) -> Result<(), TreeError> {
    for dir in [
        "proc", "sys", "dev", "run", "mnt", "etc", "usr/bin", "usr/sbin", "sbin",
    ] {
        tree.add_dir(dir)?;
    }
    tree.add("tmp", 0o1777, Node::Dir)?;
    tree.add("root", 0o700, Node::Dir)?;
    // The kernel opens /dev/console before /init runs: it must exist in
    // the archive, devtmpfs is mounted only later.
    tree.add("dev/console", 0o600, Node::CharDev { major: 5, minor: 1 })?;
    tree.add("dev/null", 0o666, Node::CharDev { major: 1, minor: 3 })?;
    tree.add_file("init", 0o755, INIT_SCRIPT.as_bytes().to_vec())?;
    tree.add_file(OCI_EXEC_PATH, 0o755, OCI_EXEC_SCRIPT.as_bytes().to_vec())?;
    tree.add_file(crate::agent::PATH, 0o755, crate::agent::BINARY.to_vec())?;
    tree.add_file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
    )?;
    tree.add_file("etc/group", 0o644, b"root:x:0:\ntty:x:5:\n".to_vec())?;
    tree.add_file("etc/hostname", 0o644, b"vessel\n".to_vec())?;
    // Present only in the initramfs (make_rootfs drops it): tells /init
    // that it may switch to a disk root.
    tree.add_file(INITRAMFS_MARKER, 0o644, Vec::new())?;
    tree.add_file("etc/profile", 0o644, PROFILE.as_bytes().to_vec())?;
    tree.add_file("etc/inittab", 0o644, INITTAB.as_bytes().to_vec())?;
    tree.add_file("etc/vessel-shell", 0o755, SHELL_SCRIPT.as_bytes().to_vec())?;
    Ok(())
}

/// The whole userspace: base files, busybox with its applet links, and the
/// modules with modules.dep/modules.alias under lib/modules/RELEASE.
pub fn build_tree(
    busybox: Vec<u8>,
    applets: &[String],
    kernel_release: &str,
    mods: &[Module],
) -> Result<Tree, TreeError> {
    let mut tree = Tree::new();
    base_tree(&mut tree)?;
    for applet in applets {
        let Ok(path) = crate::tree::normalize(applet) else {
            continue;
        };
        // Never let an applet link replace a real file (busybox itself,
        // /init) or a directory.
        if tree.get(&path).is_none() && path != "bin/busybox" {
            tree.add_symlink(&path, "/bin/busybox")?;
        }
    }
    tree.add_file("bin/busybox", 0o755, busybox)?;
    let moddir = format!("lib/modules/{kernel_release}");
    tree.add_dir(&moddir)?;
    for m in mods {
        tree.add_file(&format!("{moddir}/{}", m.path), 0o644, m.data.clone())?;
    }
    tree.add_file(
        &format!("{moddir}/modules.dep"),
        0o644,
        modules::modules_dep_text(mods).into_bytes(),
    )?;
    tree.add_file(
        &format!("{moddir}/modules.alias"),
        0o644,
        modules::modules_alias_text(mods).into_bytes(),
    )?;
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::ModInfo;

    #[test]
    fn tree_has_init_busybox_links_and_modules() {
        let m = Module {
            name: "virtio".into(),
            path: "kernel/drivers/virtio/virtio.ko".into(),
            data: vec![1, 2, 3],
            info: ModInfo {
                aliases: vec!["pci:x*".into()],
                ..ModInfo::default()
            },
        };
        let applets = vec![
            "bin/sh".to_string(),
            "etc/inittab".to_string(),
            "bin/busybox".to_string(),
            "../etc/x".to_string(),
        ];
        let t = build_tree(b"BB".to_vec(), &applets, "6.1.0-x", &[m]).unwrap();
        assert_eq!(t.get("init").unwrap().mode, 0o755);
        assert_eq!(
            t.get("bin/busybox").unwrap().node,
            Node::File(b"BB".to_vec())
        );
        assert_eq!(
            t.get("bin/sh").unwrap().node,
            Node::Symlink("/bin/busybox".into())
        );
        assert!(
            matches!(t.get("etc/inittab").unwrap().node, Node::File(_)),
            "an applet link replaced a file"
        );
        assert!(t
            .get("lib/modules/6.1.0-x/kernel/drivers/virtio/virtio.ko")
            .is_some());
        let Node::File(alias) = &t.get("lib/modules/6.1.0-x/modules.alias").unwrap().node else {
            panic!("modules.alias is not a file");
        };
        assert_eq!(alias, b"alias pci:x* virtio\n");
        assert_eq!(
            t.get("dev/console").unwrap().node,
            Node::CharDev { major: 5, minor: 1 }
        );
    }

    #[test]
    fn oci_exec_script_is_valid_shell() {
        let out = std::process::Command::new("/bin/sh")
            .args(["-n", "-c", OCI_EXEC_SCRIPT])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(format!("/{OCI_EXEC_PATH}"), crate::oci::launch::HELPER);
    }

    #[test]
    fn init_script_is_valid_shell() {
        let out = std::process::Command::new("/bin/sh")
            .args(["-n", "-c", INIT_SCRIPT])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
