// ch-remote: drives a running VMM over its API socket with Cloud Hypervisor's subcommands,
// printing each JSON answer as the server sent it, and errors to standard error (status 1).
import ArgumentParser
import CloudHypervisorAPI
import Glibc
import HostSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One request to the API: connects, sends, prints the body, or fails with the server's words.
func call(_ socket: CHRemote, _ method: String, _ endpoint: String, body: [UInt8]? = nil) throws {
    let response: APIClientResponse
    do {
        let client = try APIClient(socketPath: socket.apiSocket)
        defer { client.close() }
        response = try client.request(method, "/api/v1/\(endpoint)", body: body)
    } catch {
        throw RemoteFailure(message: "Error running command: \(error)")
    }
    guard response.isSuccess else {
        let detail = response.body.isEmpty ? "" : ": \(response.text)"
        throw RemoteFailure(message: "Error running command: Server responded with an error: \(response.status) \(response.reason)\(detail)")
    }
    if !response.body.isEmpty { print(response.text) }
}

/// A failure ch-remote reports on standard error with exit status 1.
struct RemoteFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

@main
struct CHRemote: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ch-remote",
        abstract: "Remotely control a cloud-hypervisor VMM.",
        subcommands: [
            Ping.self, ShutdownVMM.self, Create.self, Boot.self, Delete.self, Info.self, Counters.self, Pause.self,
            Resume.self, Shutdown.self, Reboot.self, PowerButton.self,
        ])

    @Option(name: .customLong("api-socket"), help: "HTTP API socket path (UNIX domain socket).")
    var apiSocket: String

    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let failure as RemoteFailure {
            writeToStandardError(failure.message + "\n")
            Glibc.exit(1)
        } catch {
            exit(withError: error)
        }
    }
}

/// A subcommand that sends one request without a body.
protocol SimpleCommand: ParsableCommand {
    var socket: CHRemote { get }
    static var method: String { get }
    static var endpoint: String { get }
}

extension SimpleCommand {
    static var method: String { "PUT" }
    func run() throws { try call(socket, Self.method, Self.endpoint) }
}

struct Ping: SimpleCommand {
    static let configuration = CommandConfiguration(abstract: "Ping the VMM to check for API server availability.")
    static let method = "GET"
    static let endpoint = "vmm.ping"
    @ParentCommand var socket: CHRemote
}

struct ShutdownVMM: SimpleCommand {
    static let configuration = CommandConfiguration(commandName: "shutdown-vmm", abstract: "Shut down the VMM.")
    static let endpoint = "vmm.shutdown"
    @ParentCommand var socket: CHRemote
}

struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a VM from a JSON configuration file ('-' reads standard input).")
    @ParentCommand var socket: CHRemote
    @Argument(help: "Path to a VmConfig JSON file, or '-' for standard input.")
    var path: String

    func run() throws {
        let bytes: [UInt8]
        if path == "-" {
            var text = ""
            while let line = readLine(strippingNewline: false) { text += line }
            bytes = Array(text.utf8)
        } else {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw RemoteFailure(message: "Error running command: cannot read the VM configuration file \(path)")
            }
            bytes = Array(data)
        }
        try call(socket, "PUT", "vm.create", body: bytes)
    }
}

struct Boot: SimpleCommand {
    static let configuration = CommandConfiguration(abstract: "Boot a created VM.")
    static let endpoint = "vm.boot"
    @ParentCommand var socket: CHRemote
}

struct Delete: SimpleCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a VM.")
    static let endpoint = "vm.delete"
    @ParentCommand var socket: CHRemote
}

struct Info: SimpleCommand {
    static let configuration = CommandConfiguration(abstract: "Info on the VM.")
    static let method = "GET"
    static let endpoint = "vm.info"
    @ParentCommand var socket: CHRemote
}

struct Counters: SimpleCommand {
    static let configuration = CommandConfiguration(abstract: "Counters from the VM.")
    static let method = "GET"
    static let endpoint = "vm.counters"
    @ParentCommand var socket: CHRemote
}

struct Pause: SimpleCommand {
    static let configuration = CommandConfiguration(abstract: "Pause the VM.")
    static let endpoint = "vm.pause"
    @ParentCommand var socket: CHRemote
}

struct Resume: SimpleCommand {
    static let configuration = CommandConfiguration(abstract: "Resume the VM.")
    static let endpoint = "vm.resume"
    @ParentCommand var socket: CHRemote
}

struct Shutdown: SimpleCommand {
    static let configuration = CommandConfiguration(abstract: "Shut down the VM.")
    static let endpoint = "vm.shutdown"
    @ParentCommand var socket: CHRemote
}

struct Reboot: SimpleCommand {
    static let configuration = CommandConfiguration(abstract: "Reboot the VM.")
    static let endpoint = "vm.reboot"
    @ParentCommand var socket: CHRemote
}

struct PowerButton: SimpleCommand {
    static let configuration = CommandConfiguration(commandName: "power-button", abstract: "Trigger a power button in the VM.")
    static let endpoint = "vm.power-button"
    @ParentCommand var socket: CHRemote
}
