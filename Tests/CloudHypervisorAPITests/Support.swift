import CloudHypervisorAPI
import CloudHypervisorAPITesting
import Foundation
import Testing
import VMM

/// A fresh socket path in its own temporary folder.
func temporarySocketPath(_ name: String = "api") -> String {
    let folder = NSTemporaryDirectory() + "ch-api-\(getpid())-\(UUID().uuidString.prefix(8))"
    try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    return folder + "/\(name).sock"
}

/// Runs `body` with a started server over `control`, stopping it afterwards.
func withServer(
    control: FakeVMMControl = FakeVMMControl(), configuration: APIServer.Configuration = APIServer.Configuration(),
    _ body: (APIServer, String) throws -> Void
) throws {
    let path = temporarySocketPath()
    let server = APIServer(socket: .path(path), control: control, configuration: configuration)
    try server.start()
    defer {
        server.stop()
        try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent)
    }
    try body(server, path)
}

/// One request on a new connection.
func send(_ path: String, _ method: String, _ endpoint: String, body: String? = nil) throws -> APIClientResponse {
    let client = try APIClient(socketPath: path, timeout: .seconds(10))
    defer { client.close() }
    return try client.request(method, endpoint.hasPrefix("/") ? endpoint : "/api/v1/\(endpoint)", body: body.map { Array($0.utf8) })
}

/// The error body's sentences.
func messages(_ response: APIClientResponse) -> [String] {
    (try? JSONDecoder().decode([String].self, from: Data(response.body))) ?? []
}

/// A configuration that validates.
let validConfigJSON = #"{"cpus":{"boot_vcpus":1,"max_vcpus":1},"memory":{"size":33554432},"payload":{"kernel":"/nonexistent/vmlinux","cmdline":"console=ttyS0"}}"#

/// A fake with a created (and optionally booted, paused...) VM.
func fake(in state: VMState?) throws -> FakeVMMControl {
    let control = FakeVMMControl()
    guard let state else { return control }
    var config = VMConfig()
    config.payload = PayloadConfig(kernel: "/nonexistent/vmlinux")
    try control.create(config)
    switch state {
    case .created: break
    case .running: try control.boot()
    case .paused: try control.boot(); try control.pause()
    case .shutdown: try control.boot(); try control.shutdown()
    case .breakPoint: Issue.record("no way to reach BreakPoint")
    }
    return control
}
