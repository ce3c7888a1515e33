// ch-remote: drives a running VMM over its API socket with Cloud Hypervisor v53.0's
// subcommands, sending the same requests its ch-remote sends, printing each JSON answer as the
// server sent it, and errors to standard error as Cloud Hypervisor's chain of causes (status 1).
import ArgumentParser
import CloudHypervisorAPI
import Glibc
import HostSystem
import VMM

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

@main
struct CHRemote: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ch-remote",
        abstract: "Remotely control a cloud-hypervisor VMM.",
        version: "ch-remote \(VMMVersion.string)",
        // Cloud Hypervisor lists them in alphabetical order.
        subcommands: [
            AddDevice.self, AddDisk.self, AddFs.self, AddGenericVhostUser.self, AddNet.self, AddPmem.self, AddUserDevice.self,
            AddVdpa.self, AddVsock.self, Boot.self, Coredump.self, Counters.self, Create.self, Delete.self, Info.self, Nmi.self,
            Pause.self, Ping.self, PowerButton.self, Reboot.self, ReceiveMigration.self, RemoveDevice.self, Resize.self,
            ResizeDisk.self, ResizeZone.self, Restore.self, Resume.self, SendMigration.self, Shutdown.self, ShutdownVMM.self,
            Snapshot.self,
        ])

    @Option(name: .customLong("api-socket"), help: "HTTP API socket path (UNIX domain socket).")
    var apiSocket: String?

    // Cloud Hypervisor's ch-remote built with its `dbus_api` feature talks D-Bus instead; this
    // one has no D-Bus client, so these are accepted only to be refused by name.
    @Option(name: .customLong("dbus-object-path"), help: .hidden)
    var dbusObjectPath: String?
    @Option(name: .customLong("dbus-service-name"), help: .hidden)
    var dbusServiceName: String?
    @Flag(name: .customLong("dbus-system-bus"), help: .hidden)
    var dbusSystemBus = false

    func run() throws {
        throw ValidationError("give a subcommand (ping, info, boot, add-disk, resize, ...); see ch-remote --help")
    }

    /// The API socket to use, or why there is none.
    func socketPath() throws(RemoteFailure) -> String {
        let dbus = [("--dbus-service-name", dbusServiceName != nil), ("--dbus-object-path", dbusObjectPath != nil),
                    ("--dbus-system-bus", dbusSystemBus)].filter(\.1).map(\.0)
        if !dbus.isEmpty {
            throw RemoteFailure([
                "\(dbus.joined(separator: ", ")): this ch-remote has no D-Bus client (Cloud Hypervisor's optional dbus_api feature)",
                "use --api-socket <path> to reach the VMM's REST API",
            ])
        }
        guard let apiSocket else {
            throw RemoteFailure(["no API socket given: use --api-socket <path> (the D-Bus options are not available in this build)"])
        }
        return apiSocket
    }

    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let failure as RemoteFailure {
            writeToStandardError(failure.report)
            Glibc.exit(1)
        } catch {
            exit(withError: error)
        }
    }
}

/// A failure ch-remote reports on standard error with exit status 1: a chain of causes, from
/// the most general to the most precise, printed as Cloud Hypervisor prints it.
struct RemoteFailure: Error, CustomStringConvertible {
    let lines: [String]

    init(_ lines: [String]) { self.lines = lines }

    /// `command: context` then the detail (`add-disk: Error parsing disk syntax`, `unknown key 'foo'...`).
    init(_ command: String, _ problem: SyntaxProblem) {
        lines = ["\(command): \(problem.context)", problem.detail]
    }

    var description: String { lines.joined(separator: ": ") }

    /// The text for standard error.
    var report: String {
        guard lines.count > 1 else { return "Error: ch-remote exited with the following error:\n  \(lines.first ?? "")\n" }
        var text = "Error: ch-remote exited with the following chain of errors:\n"
        for (level, line) in lines.enumerated() { text += "  \(level): \(line)\n" }
        return text
    }
}

/// One request to the API.
struct RemoteRequest {
    /// `GET` or `PUT`.
    var method: String
    /// The endpoint under `/api/v1/` (`vm.add-disk`).
    var endpoint: String
    /// The JSON body, if the endpoint takes one.
    var body: [UInt8]?
    /// Descriptors passed with the request as SCM_RIGHTS; they must be open in this process.
    var descriptors: [Int32] = []
}

/// A subcommand: builds its request (refusing bad syntax before connecting), then sends it.
protocol RemoteCommand: ParsableCommand {
    /// The parent command, for `--api-socket`.
    var remote: CHRemote { get }
    /// The request this subcommand sends.
    func request() throws(RemoteFailure) -> RemoteRequest
}

extension RemoteCommand {
    func run() throws {
        let path = try remote.socketPath()
        try send(request(), to: path)
    }
}

/// Sends `request` on a new connection to `path`; prints the answer's body, or fails with the
/// server's status, reason and messages.
func send(_ request: RemoteRequest, to path: String) throws(RemoteFailure) {
    let client: APIClient
    do {
        // Cloud Hypervisor's ch-remote waits for the answer however long the action takes.
        client = try APIClient(socketPath: path, timeout: .seconds(24 * 3600))
    } catch {
        throw RemoteFailure(["Error opening HTTP socket: \(error)"])
    }
    defer { client.close() }
    let response: APIClientResponse
    do {
        response = try client.request(request.method, "/api/v1/\(request.endpoint)", body: request.body,
                                      fileDescriptors: request.descriptors)
    } catch {
        throw RemoteFailure(["http client error", "\(error)"])
    }
    guard response.isSuccess else {
        var lines = ["http client error", "Server responded with \(response.status) \(response.reason)"]
        if !response.body.isEmpty {
            if let messages = try? JSONDecoder().decode([String].self, from: Data(response.body)) {
                lines += messages
            } else {
                lines.append(response.text)
            }
        }
        throw RemoteFailure(lines)
    }
    if !response.body.isEmpty { print(response.text) }
}

/// Refuses descriptors that are not open here: they are sent with the request (SCM_RIGHTS),
/// so `fd=` must name descriptors ch-remote inherited.
func requireOpen(_ descriptors: [Int32], command: String, key: String) throws(RemoteFailure) {
    for descriptor in descriptors where fcntl(descriptor, F_GETFD) == -1 {
        let reason = String(cString: strerror(errno))
        throw RemoteFailure([
            "\(command): \(key)=\(descriptor) is not a descriptor open in ch-remote (\(reason))",
            "descriptors named by \(key)= travel with the request as SCM_RIGHTS, so ch-remote must inherit them open",
        ])
    }
}

/// All of a file's bytes (`-` for standard input), or why not.
func readAll(path: String) throws(RemoteFailure) -> [UInt8] {
    if path == "-" {
        var text = ""
        while let line = readLine(strippingNewline: false) { text += line }
        return Array(text.utf8)
    }
    guard let data = FileManager.default.contents(atPath: path) else {
        let reason = access(path, R_OK) == 0 ? "it is not a readable file" : String(cString: strerror(errno))
        throw RemoteFailure(["create: Error reading from file", "cannot read \(path): \(reason)"])
    }
    return Array(data)
}
