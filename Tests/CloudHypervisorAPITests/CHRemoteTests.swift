import CloudHypervisorAPI
import CloudHypervisorAPITesting
import Foundation
import Testing
import VMM

/// The built ch-remote binary against a live server.
@Suite("ch-remote end to end")
struct CHRemoteTests {
    /// The binary sits next to the test bundle in the build folder.
    static var binary: String {
        let testBinary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        return testBinary.deletingLastPathComponent().appendingPathComponent("ch-remote").path
    }

    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func run(_ arguments: [String], input: String? = nil) throws -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        let out = Pipe(), err = Pipe(), inPipe = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input == nil ? FileHandle.nullDevice : inPipe
        try process.run()
        if let input {
            inPipe.fileHandleForWriting.write(Data(input.utf8))
            try inPipe.fileHandleForWriting.close()
        }
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                   stderr: String(decoding: stderr, as: UTF8.self))
    }

    @Test("ping, create (file and stdin), boot, info, counters, pause, resume, reboot, power-button, shutdown, delete, shutdown-vmm")
    func lifecycle() throws {
        let control = FakeVMMControl()
        try withServer(control: control) { _, path throws in
            let socket = ["--api-socket", path]
            let ping = try Self.run(socket + ["ping"])
            #expect(ping.status == 0)
            #expect(try JSONDecoder().decode(VMMPingResponse.self, from: Data(ping.stdout.utf8)).version == VMMVersion.cloudHypervisor)

            let file = (path as NSString).deletingLastPathComponent + "/vm.json"
            try validConfigJSON.write(toFile: file, atomically: true, encoding: .utf8)
            let create = try Self.run(socket + ["create", file])
            #expect(create.status == 0, "\(create.stderr)")
            #expect(create.stdout.isEmpty)
            #expect(try Self.run(socket + ["boot"]).status == 0)
            let info = try Self.run(socket + ["info"])
            #expect(info.status == 0)
            #expect(try JSONDecoder().decode(VMInfo.self, from: Data(info.stdout.utf8)).state == .running)
            let counters = try Self.run(socket + ["counters"])
            #expect(counters.stdout.contains("read_bytes"))
            for command in ["pause", "resume", "reboot", "power-button", "shutdown", "delete"] {
                let result = try Self.run(socket + [command])
                #expect(result.status == 0, "\(command): \(result.stderr)")
                #expect(result.stdout.isEmpty && result.stderr.isEmpty, "\(command)")
            }
            #expect(control.state == nil)
            let fromStdin = try Self.run(socket + ["create", "-"], input: validConfigJSON)
            #expect(fromStdin.status == 0, "\(fromStdin.stderr)")
            #expect(control.state == .created)
            #expect(try Self.run(socket + ["shutdown-vmm"]).status == 0)
            #expect(control.snapshot.vmmShutdownRequested)
        }
    }

    @Test("server errors go to standard error with exit status 1")
    func errors() throws {
        try withServer { _, path throws in
            let info = try Self.run(["--api-socket", path, "info"])
            #expect(info.status == 1)
            #expect(info.stdout.isEmpty)
            #expect(info.stderr.contains("404 Not Found"))
            #expect(info.stderr.contains("no VM is created"))
            let bad = try Self.run(["--api-socket", path, "create", "-"], input: #"{"cpus":{"boot_vcpus":1,"max_vcpus":1},"foo":1}"#)
            #expect(bad.status == 1)
            #expect(bad.stderr.contains("no kernel to boot"), "\(bad.stderr)")
            let missing = try Self.run(["--api-socket", path, "create", "/nonexistent/vm.json"])
            #expect(missing.status == 1)
            #expect(missing.stderr.contains("/nonexistent/vm.json"))
        }
        let nobody = try Self.run(["--api-socket", "/nonexistent/api.sock", "ping"])
        #expect(nobody.status == 1)
        #expect(nobody.stderr.contains("cannot connect to the API socket /nonexistent/api.sock"))
        let usage = try Self.run(["ping"])
        #expect(usage.status != 0)
        #expect(usage.stderr.contains("--api-socket"))
    }
}
