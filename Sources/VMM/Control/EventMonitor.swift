// `--event-monitor`: lifecycle and device events as Cloud Hypervisor writes them
// (event_monitor crate): one pretty-printed JSON object per event, followed by a blank line.
import CLinux
import Glibc
import HostSystem
import Synchronization

/// Where `--event-monitor` writes: a file it creates, or an inherited descriptor.
public enum EventMonitorConfig: Equatable, Sendable {
    /// Create (truncate) this file.
    case path(String)
    /// Write to this open descriptor (a pipe, a socket, a file).
    case fileDescriptor(Int32)

    /// The accepted `--event-monitor` syntax.
    public static let syntax = "path=</path/to/a/file>|fd=<an open file descriptor>"

    /// Parses an `--event-monitor` value (`path=...` or `fd=N`).
    public static func parse(_ text: String, option: String = "--event-monitor") throws(ConfigError) -> EventMonitorConfig {
        let list = try OptionList(text, option: option, knownKeys: ["path", "fd"])
        switch (list["path"], list["fd"]) {
        case (nil, nil): throw ConfigError(option: option, "give a destination: \(syntax)")
        case (.some, .some): throw ConfigError(option: option, "give either path= or fd=, not both")
        case let (.some(path), nil):
            guard !path.isEmpty else { throw ConfigError(option: option, "path= needs a file path") }
            return .path(path)
        case let (nil, .some(text)):
            guard let fd = Int32(text), fd >= 0 else { throw ConfigError(option: option, "fd=\(text) is not a file descriptor number (0 or more)") }
            return .fileDescriptor(fd)
        }
    }
}

/// Writes Cloud Hypervisor-style events. Each event is a JSON object with `timestamp`
/// (`{"secs": s, "nanos": n}` since the monitor was created, standing for the VMM's start),
/// `source` (`"vmm"`, `"vm"`, `"virtio-device"`, ...), `event` (`"starting"`, `"booting"`,
/// `"booted"`, `"pausing"`, `"paused"`, `"resuming"`, `"resumed"`, `"shutdown"`, `"rebooting"`,
/// `"rebooted"`, `"deleted"`, `"activated"`, ...) and `properties` (an object of strings, or
/// null), pretty-printed with two-space indentation and followed by an empty line.
///
/// Thread-safe: events from several threads never interleave. Writes are synchronous; a write
/// error (a closed pipe) drops the event and is never fatal, provided the process ignores
/// `SIGPIPE` (as Rust programs such as Cloud Hypervisor do by default).
public final class EventMonitor: Sendable {
    private let descriptor: Mutex<OwnedFileDescriptor?>
    private let start: timespec

    /// Writes to `fileDescriptor`, which the monitor owns and closes from now on.
    public init(fileDescriptor: OwnedFileDescriptor) {
        descriptor = Mutex(fileDescriptor)
        start = Self.now()
    }

    /// Writes to the raw descriptor `fd` (`--event-monitor fd=N`), taking ownership of it.
    public convenience init(fileDescriptor fd: Int32) {
        self.init(fileDescriptor: OwnedFileDescriptor(adopting: fd))
    }

    /// Creates (or truncates) the file at `path` and writes there.
    public convenience init(path: String) throws(SystemError) {
        self.init(fileDescriptor: try OwnedFileDescriptor(path: path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644))
    }

    /// Opens the destination `config` names.
    public convenience init(_ config: EventMonitorConfig) throws(SystemError) {
        switch config {
        case let .path(path): try self.init(path: path)
        case let .fileDescriptor(fd): self.init(fileDescriptor: fd)
        }
    }

    /// Writes one event. `properties` keys are written in sorted order.
    public func emit(source: String, event: String, properties: [String: String]? = nil) {
        let text = Self.format(elapsed: Self.elapsed(since: start), source: source, event: event, properties: properties)
        descriptor.withLock { fd in
            guard let current = fd else { return }
            do {
                try current.writeAll(text.utf8)
            } catch let error as SystemError {
                // The reader went away: stop writing rather than failing the VMM.
                if error.errno == EPIPE || error.errno == EBADF { fd = nil }
            } catch {}
        }
    }

    /// One event's text: the JSON object and the blank line after it.
    static func format(elapsed: (secs: Int64, nanos: Int64), source: String, event: String, properties: [String: String]?) -> String {
        var text = "{\n  \"timestamp\": {\n    \"secs\": \(elapsed.secs),\n    \"nanos\": \(elapsed.nanos)\n  },\n"
        text += "  \"source\": \(quoted(source)),\n  \"event\": \(quoted(event)),\n"
        if let properties, !properties.isEmpty {
            text += "  \"properties\": {\n"
            text += properties.keys.sorted().map { "    \(quoted($0)): \(quoted(properties[$0]!))" }.joined(separator: ",\n")
            text += "\n  }\n}\n\n"
        } else if properties != nil {
            text += "  \"properties\": {}\n}\n\n"
        } else {
            text += "  \"properties\": null\n}\n\n"
        }
        return text
    }

    /// `value` as a JSON string literal.
    static func quoted(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    private static func now() -> timespec {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return time
    }

    private static func elapsed(since start: timespec) -> (secs: Int64, nanos: Int64) {
        let current = now()
        var secs = Int64(current.tv_sec) - Int64(start.tv_sec)
        var nanos = Int64(current.tv_nsec) - Int64(start.tv_nsec)
        if nanos < 0 {
            secs -= 1
            nanos += 1_000_000_000
        }
        return (secs, nanos)
    }
}
