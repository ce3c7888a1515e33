import CLinux
import Glibc
import HostSystem
import Logging

/// Where the VMM's log goes: standard error, or a file (`--log-file`), one line per message
/// with the time since start, the level and the source, as Cloud Hypervisor's log does.
struct LogSetup {
    private let sink: LogSink

    init(level: Logger.Level, file: String?) throws {
        if let file {
            let descriptor = try OwnedFileDescriptor(path: file, flags: O_WRONLY | O_CREAT | O_APPEND)
            sink = LogSink(descriptor: descriptor.take(), level: level)
        } else {
            sink = LogSink(descriptor: 2, level: level)
        }
        let sink = self.sink
        LoggingSystem.bootstrap { label in LineLogHandler(label: label, sink: sink) }
    }

    func logger(label: String) -> Logger { Logger(label: label) }
}

/// The descriptor log lines are written to, and the threshold.
final class LogSink: Sendable {
    let descriptor: Int32
    let level: Logger.Level
    let start: Double

    init(descriptor: Int32, level: Logger.Level) {
        self.descriptor = descriptor
        self.level = level
        start = LogSink.now()
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    func write(_ line: String) {
        let bytes = Array(line.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
    }
}

/// A swift-log handler writing `cloud-hypervisor: 1.234567s: <level> <label>: message`.
struct LineLogHandler: LogHandler {
    let label: String
    let sink: LogSink
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level

    init(label: String, sink: LogSink) {
        self.label = label
        self.sink = sink
        logLevel = sink.level
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let elapsed = LogSink.now() - sink.start
        let micros = Int(elapsed * 1_000_000)
        let stamp = "\(micros / 1_000_000).\(String(repeating: "0", count: 6 - String(micros % 1_000_000).count))\(micros % 1_000_000)s"
        sink.write("cloud-hypervisor: \(stamp): <\(label)> \(event.level.rawValue.uppercased()): \(event.message)\n")
    }
}


