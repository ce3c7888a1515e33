import CLinux

/// A terminal switched to raw mode (no echo, no line editing, no signal keys), put back as it
/// was by `restore()` or when the object goes away.
///
/// The VMM uses it for `--serial tty`: every key goes to the guest, including Ctrl-C.
public final class RawTerminal: @unchecked Sendable {
    /// The terminal's descriptor (not owned: usually standard input).
    public let descriptor: Int32
    private let saved: termios
    private var restored = false

    /// Switches `descriptor` to raw mode. Fails with `ENOTTY` if it is not a terminal.
    public init(descriptor: Int32 = 0) throws(SystemError) {
        self.descriptor = descriptor
        var original = termios()
        _ = try checked("tcgetattr(fd \(descriptor))") { tcgetattr(descriptor, &original) }
        saved = original
        var raw = original
        cfmakeraw(&raw)
        // Keep output post-processing so that "\n" from the VMM's own messages still starts a line.
        raw.c_oflag |= tcflag_t(OPOST)
        _ = try checked("tcsetattr(fd \(descriptor))") { tcsetattr(descriptor, TCSANOW, &raw) }
    }

    /// Whether `descriptor` is a terminal.
    public static func isTerminal(_ descriptor: Int32) -> Bool { isatty(descriptor) == 1 }

    /// The size of the terminal on `descriptor` in character cells (`TIOCGWINSZ`), or nil
    /// when it is no terminal.
    public static func windowSize(_ descriptor: Int32) -> (columns: UInt16, rows: UInt16)? {
        var size = winsize()
        // SAFETY: TIOCGWINSZ fills exactly one struct winsize, which `size` is.
        guard clinux_ioctl_ptr(descriptor, UInt(TIOCGWINSZ), &size) == 0 else { return nil }
        return (size.ws_col, size.ws_row)
    }

    /// Puts the terminal back as it was. Idempotent.
    public func restore() {
        if restored { return }
        restored = true
        var original = saved
        _ = tcsetattr(descriptor, TCSANOW, &original)
    }

    deinit { restore() }
}

/// A new pseudo-terminal pair: the VMM keeps the controlling side, a user attaches to
/// `path` (for example with `screen <path>`).
///
/// The corresponding calls are `posix_openpt`, `grantpt`, `unlockpt` and `ptsname_r`.
public final class PseudoTerminal: Sendable {
    /// The controlling (master) side, read and written by the VMM.
    public let controller: OwnedFileDescriptor
    /// The path of the terminal side (`/dev/pts/N`).
    public let path: String
    /// The terminal side, held open by the VMM itself: when a user's client (`screen`,
    /// `virsh console`) closes it, the controller then sees no hang-up and input keeps
    /// flowing for the next client, as Cloud Hypervisor keeps its pty's other end.
    public let terminal: OwnedFileDescriptor

    /// Opens a new pseudo-terminal in raw mode. The controller is non-blocking: output
    /// nobody reads fills the terminal's buffer and is then dropped, never stalling a writer.
    public init() throws(SystemError) {
        var buffer = [CChar](repeating: 0, count: 128)
        let fd = try checked("posix_openpt") { clinux_open_pty(&buffer, buffer.count) }
        controller = OwnedFileDescriptor(adopting: fd)
        path = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        terminal = try OwnedFileDescriptor(path: path, flags: O_RDWR | O_NOCTTY | O_CLOEXEC)
        try controller.setNonBlocking(true)
        var settings = termios()
        if tcgetattr(fd, &settings) == 0 {
            cfmakeraw(&settings)
            _ = tcsetattr(fd, TCSANOW, &settings)
        }
    }
}
