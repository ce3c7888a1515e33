import Foundation
import HostSystem
import Testing
import VMM

@Suite("event monitor")
struct EventMonitorTests {
    /// Splits the file into events at the blank lines and decodes each.
    static func events(in text: String) throws -> [[String: Any]] {
        try text.components(separatedBy: "\n\n").filter { !$0.isEmpty }.map {
            try #require(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    @Test("events are Cloud Hypervisor's pretty JSON objects separated by blank lines")
    func format() throws {
        let path = NSTemporaryDirectory() + "ch-events-\(getpid())-\(UUID().uuidString.prefix(8)).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let monitor = try EventMonitor(path: path)
        monitor.emit(source: "vmm", event: "starting")
        monitor.emit(source: "vm", event: "booted", properties: [:])
        monitor.emit(source: "virtio-device", event: "activated", properties: ["id": "_rng", "note": "a \"quoted\"\nline\u{1}"])
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.hasPrefix("{\n  \"timestamp\": {\n    \"secs\": 0,\n    \"nanos\": "))
        #expect(text.contains("\n  },\n  \"source\": \"vmm\",\n  \"event\": \"starting\",\n  \"properties\": null\n}\n\n{"))
        let events = try Self.events(in: text)
        #expect(events.count == 3)
        #expect(events.map { $0["event"] as? String } == ["starting", "booted", "activated"])
        #expect(events[2]["properties"] as? [String: String] == ["id": "_rng", "note": "a \"quoted\"\nline\u{1}"])
        let stamps = events.compactMap { $0["timestamp"] as? [String: Int] }.map { $0["secs"]! * 1_000_000_000 + $0["nanos"]! }
        #expect(stamps == stamps.sorted())
        #expect(text.hasSuffix("}\n\n"))
    }

    @Test("events from many threads never interleave")
    func threads() throws {
        let path = NSTemporaryDirectory() + "ch-events-\(getpid())-\(UUID().uuidString.prefix(8)).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let monitor = try EventMonitor(.path(path))
        DispatchQueue.concurrentPerform(iterations: 8) { thread in
            for index in 0..<25 { monitor.emit(source: "vm", event: "e\(thread)", properties: ["i": "\(index)"]) }
        }
        let events = try Self.events(in: try String(contentsOfFile: path, encoding: .utf8))
        #expect(events.count == 200)
    }

    @Test("a reader that went away is not fatal (with SIGPIPE ignored, as the VMM must)")
    func closedPipe() throws {
        signal(SIGPIPE, SIG_IGN)
        let pipe = Pipe()
        let monitor = EventMonitor(fileDescriptor: dup(pipe.fileHandleForWriting.fileDescriptor))
        try pipe.fileHandleForWriting.close()
        try pipe.fileHandleForReading.close()
        monitor.emit(source: "vmm", event: "starting")
        monitor.emit(source: "vmm", event: "shutdown")
    }

    @Test("--event-monitor values")
    func parse() throws {
        #expect(try EventMonitorConfig.parse("path=/tmp/events") == .path("/tmp/events"))
        #expect(try EventMonitorConfig.parse("fd=5") == .fileDescriptor(5))
        for bad in ["", "fd=x", "path=", "fd=1,path=/a", "/tmp/events"] {
            #expect(throws: ConfigError.self) { try EventMonitorConfig.parse(bad) }
        }
    }
}
