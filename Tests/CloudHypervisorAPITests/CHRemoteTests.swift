import CloudHypervisorAPI
import CloudHypervisorAPITesting
import Foundation
import HostSystem
import Testing
import VMM

/// The built ch-remote binary against a live server (over FakeVMMControl), and against a
/// recording server that keeps each request's raw method, path, body and passed descriptors.
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

    /// Runs ch-remote. With `descriptor`, that descriptor is open in ch-remote as each of
    /// `numbers` (a shell duplicates it there before exec), as a caller handing over TAPs would.
    static func run(_ arguments: [String], input: String? = nil, descriptor: (fd: Int32, numbers: [Int32])? = nil) throws -> Run {
        let process = Process()
        let out = Pipe(), err = Pipe(), inPipe = Pipe()
        if let descriptor {
            let redirections = descriptor.numbers.map { "\($0)<&0" }.joined(separator: " ")
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "exec \"$@\" \(redirections) </dev/null", "sh", binary] + arguments
            process.standardInput = FileHandle(fileDescriptor: descriptor.fd, closeOnDealloc: false)
        } else {
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = arguments
            process.standardInput = input == nil ? FileHandle.nullDevice : inPipe
        }
        process.standardOutput = out
        process.standardError = err
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

    /// A JSON body as an object.
    static func object(_ bytes: [UInt8]) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] ?? [:]
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
            // Without a path, create reads standard input, as Cloud Hypervisor's does.
            let fromStdin = try Self.run(socket + ["create"], input: validConfigJSON)
            #expect(fromStdin.status == 0, "\(fromStdin.stderr)")
            #expect(control.state == .created)
            #expect(try Self.run(socket + ["shutdown-vmm"]).status == 0)
            #expect(control.snapshot.vmmShutdownRequested)
        }
    }

    /// One subcommand and the request Cloud Hypervisor v53.0's ch-remote sends for it.
    struct Expected {
        var arguments: [String]
        var method = "PUT"
        var endpoint: String
        /// The body byte for byte as serde_json writes it, when ch-remote builds it itself.
        var body: String?
    }

    /// Bodies ch-remote writes itself: compared byte for byte with what serde_json writes for
    /// Cloud Hypervisor's structs (fields in declaration order, `null` for `None`).
    static let exactRequests: [Expected] = [
        Expected(arguments: ["ping"], method: "GET", endpoint: "vmm.ping"),
        Expected(arguments: ["shutdown-vmm"], endpoint: "vmm.shutdown"),
        Expected(arguments: ["boot"], endpoint: "vm.boot"),
        Expected(arguments: ["delete"], endpoint: "vm.delete"),
        Expected(arguments: ["info"], method: "GET", endpoint: "vm.info"),
        Expected(arguments: ["counters"], method: "GET", endpoint: "vm.counters"),
        Expected(arguments: ["pause"], endpoint: "vm.pause"),
        Expected(arguments: ["resume"], endpoint: "vm.resume"),
        Expected(arguments: ["shutdown"], endpoint: "vm.shutdown"),
        Expected(arguments: ["reboot"], endpoint: "vm.reboot"),
        Expected(arguments: ["power-button"], endpoint: "vm.power-button"),
        Expected(arguments: ["nmi"], endpoint: "vm.nmi"),
        Expected(arguments: ["resize", "--cpus", "2", "--memory", "3G", "--balloon", "512M"], endpoint: "vm.resize",
                 body: #"{"desired_vcpus":2,"desired_ram":3221225472,"desired_balloon":536870912}"#),
        Expected(arguments: ["resize", "--memory=1G"], endpoint: "vm.resize",
                 body: #"{"desired_vcpus":null,"desired_ram":1073741824,"desired_balloon":null}"#),
        Expected(arguments: ["resize", "--cpus", "8"], endpoint: "vm.resize",
                 body: #"{"desired_vcpus":8,"desired_ram":null,"desired_balloon":null}"#),
        Expected(arguments: ["resize", "--balloon", "4096"], endpoint: "vm.resize",
                 body: #"{"desired_vcpus":null,"desired_ram":null,"desired_balloon":4096}"#),
        Expected(arguments: ["resize-disk", "--disk", "_disk0", "--size", "2G"], endpoint: "vm.resize-disk",
                 body: #"{"id":"_disk0","desired_size":2147483648}"#),
        Expected(arguments: ["resize-zone", "--id", "mem0", "--size", "64K"], endpoint: "vm.resize-zone",
                 body: #"{"id":"mem0","desired_ram":65536}"#),
        Expected(arguments: ["remove-device", "_disk0"], endpoint: "vm.remove-device", body: #"{"id":"_disk0"}"#),
        Expected(arguments: ["snapshot", "file:///home/foo/snapshot"], endpoint: "vm.snapshot",
                 body: #"{"destination_url":"file:///home/foo/snapshot"}"#),
        Expected(arguments: ["coredump", "file:///tmp/ch.dump"], endpoint: "vm.coredump",
                 body: #"{"destination_url":"file:///tmp/ch.dump"}"#),
        Expected(arguments: ["restore", "source_url=file:///home/foo/snapshot"], endpoint: "vm.restore",
                 body: #"{"source_url":"file:///home/foo/snapshot","prefault":false,"memory_restore_mode":"Copy","net_fds":null,"resume":false}"#),
        Expected(arguments: ["restore", "source_url=file:///s,prefault=on,memory_restore_mode=OnDemand,resume=true"], endpoint: "vm.restore",
                 body: #"{"source_url":"file:///s","prefault":true,"memory_restore_mode":"OnDemand","net_fds":null,"resume":true}"#),
        Expected(arguments: ["send-migration", "destination_url=unix:/tmp/sock,local=on"], endpoint: "vm.send-migration",
                 body: #"{"destination_url":"unix:/tmp/sock","local":true,"downtime_ms":300,"timeout_s":3600,"timeout_strategy":"Cancel","connections":1,"tls_dir":null,"memory_mode":"Precopy"}"#),
        Expected(arguments: ["send-migration", "destination_url=tcp:192.168.1.1:8080,downtime_ms=200,timeout_s=60,timeout_strategy=ignore,connections=4"],
                 endpoint: "vm.send-migration",
                 body: #"{"destination_url":"tcp:192.168.1.1:8080","local":false,"downtime_ms":200,"timeout_s":60,"timeout_strategy":"Ignore","connections":4,"tls_dir":null,"memory_mode":"Precopy"}"#),
        Expected(arguments: ["send-migration", "destination_url=tcp:[2001:db8::1]:8080,memory_mode=postcopy"], endpoint: "vm.send-migration",
                 body: #"{"destination_url":"tcp:[2001:db8::1]:8080","local":false,"downtime_ms":300,"timeout_s":3600,"timeout_strategy":"Cancel","connections":1,"tls_dir":null,"memory_mode":"Postcopy"}"#),
        Expected(arguments: ["receive-migration", "receiver_url=unix:/tmp/ch=migrate.sock"], endpoint: "vm.receive-migration",
                 body: #"{"receiver_url":"unix:/tmp/ch=migrate.sock","tls_dir":null,"memory_mode":"Precopy"}"#),
        Expected(arguments: ["receive-migration", "receiver_url=tcp:0.0.0.0:9000,memory_mode=postcopy"], endpoint: "vm.receive-migration",
                 body: #"{"receiver_url":"tcp:0.0.0.0:9000","tls_dir":null,"memory_mode":"Postcopy"}"#),
    ]

    @Test("every subcommand without a device syntax sends Cloud Hypervisor's method, path and body, byte for byte")
    func exactBodies() throws {
        let server = try RecordingServer()
        defer { server.stop() }
        for expected in Self.exactRequests {
            let result = try Self.run(["--api-socket", server.path] + expected.arguments)
            #expect(result.status == 0, "\(expected.arguments): \(result.stderr)")
            guard let request = server.requests.last, server.requests.count == 1 else {
                Issue.record("\(expected.arguments): \(server.requests.count) requests arrived")
                server.reset()
                continue
            }
            #expect(request.method == expected.method, "\(expected.arguments)")
            #expect(request.path == "/api/v1/\(expected.endpoint)", "\(expected.arguments)")
            if let body = expected.body {
                #expect(request.text == body, "\(expected.arguments)")
                #expect(request.contentType == "application/json", "\(expected.arguments)")
            } else {
                #expect(request.body.isEmpty && !request.hasContentLength, "\(expected.arguments): \(request.text)")
            }
            #expect(request.descriptors.isEmpty)
            server.reset()
        }
    }

    @Test("create sends the file's bytes as they are")
    func createBody() throws {
        let server = try RecordingServer()
        defer { server.stop() }
        let file = (server.path as NSString).deletingLastPathComponent + "/vm.json"
        let text = "{\n  \"cpus\": {\"boot_vcpus\": 1}, \"payload\": {\"kernel\": \"/k\"}\n}\n"
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try Self.run(["--api-socket", server.path, "create", file])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(server.requests.map(\.path) == ["/api/v1/vm.create"])
        #expect(server.requests.first?.text == text)
    }

    /// Each add-* subcommand, an option string, and fields its JSON must carry under Cloud
    /// Hypervisor's names.
    static var deviceCases: [(command: String, option: String, fields: [String: Any])] { [
        ("add-disk", "path=/img/disk.raw,readonly=on,id=disk9", ["path": "/img/disk.raw", "readonly": true, "id": "disk9"]),
        ("add-net", "tap=chtap0,mac=52:54:00:12:34:56,num_queues=4", ["tap": "chtap0", "mac": "52:54:00:12:34:56", "num_queues": 4]),
        ("add-fs", "tag=myfs,socket=/foo/bar/virtiofs.sock", ["tag": "myfs", "socket": "/foo/bar/virtiofs.sock"]),
        ("add-pmem", "file=/foo/bar.cloud.img,size=128M,discard_writes=on", ["file": "/foo/bar.cloud.img", "size": 134_217_728, "discard_writes": true]),
        ("add-vsock", "cid=3,socket=/foo/bar/vsock.sock", ["cid": 3, "socket": "/foo/bar/vsock.sock"]),
        ("add-vdpa", "path=/dev/vhost-vdpa-0,num_queues=2", ["path": "/dev/vhost-vdpa-0", "num_queues": 2]),
        ("add-device", "path=/sys/bus/pci/devices/0000:01:00.0/,id=vfio0", ["path": "/sys/bus/pci/devices/0000:01:00.0/", "id": "vfio0"]),
        ("add-user-device", "socket=/tmp/user.sock,id=user0", ["socket": "/tmp/user.sock", "id": "user0"]),
        ("add-generic-vhost-user", "socket=/tmp/gpu.sock,queue_sizes=[256,128],device_type=gpu",
         ["socket": "/tmp/gpu.sock", "queue_sizes": [256, 128], "device_type": 16]),
    ] }

    /// A JSON object's text with sorted keys, for comparing.
    static func canonical(_ object: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    /// Whether a decoded JSON value equals an expected string, boolean, number or list of numbers.
    static func same(_ value: Any?, _ expected: Any) -> Bool {
        switch expected {
        case let text as String: value as? String == text
        case let flag as Bool: value as? Bool == flag
        case let number as Int: value as? Int == number
        case let numbers as [Int]: value as? [Int] == numbers
        default: false
        }
    }

    /// The configuration the VMM's parser makes of `option` for `command`, as JSON.
    static func parsedJSON(_ command: String, _ option: String) throws -> [String: Any] {
        func encoded(_ value: some Encodable) throws -> [String: Any] { object(Array(try JSONEncoder().encode(value))) }
        switch command {
        case "add-disk": return try encoded(DiskConfig.parse(option))
        case "add-net": return try encoded(NetConfig.parse(option))
        case "add-fs": return try encoded(FsConfig.parse(option))
        case "add-pmem": return try encoded(PmemConfig.parse(option))
        case "add-vsock": return try encoded(VsockConfig.parse(option))
        case "add-vdpa": return try encoded(VdpaConfig.parse(option))
        case "add-device": return try encoded(DeviceConfig.parse(option))
        case "add-user-device": return try encoded(UserDeviceConfig.parse(option))
        case "add-generic-vhost-user": return try encoded(GenericVhostUserConfig.parse(option))
        default: Issue.record("no parser for \(command)"); return [:]
        }
    }

    @Test("add-* parse Cloud Hypervisor's option syntax with the cloud-hypervisor command's parsers and send that configuration")
    func deviceBodies() throws {
        let server = try RecordingServer()
        defer { server.stop() }
        for (command, option, fields) in Self.deviceCases {
            let result = try Self.run(["--api-socket", server.path, command, option])
            #expect(result.status == 0, "\(command): \(result.stderr)")
            guard let request = server.requests.first, server.requests.count == 1 else {
                Issue.record("\(command): \(server.requests.count) requests arrived")
                server.reset()
                continue
            }
            #expect(request.method == "PUT" && request.path == "/api/v1/vm.\(command)", "\(command)")
            let sent = Self.object(request.body)
            #expect(try Self.canonical(sent) == Self.canonical(Self.parsedJSON(command, option)), "\(command): \(request.text)")
            for (key, value) in fields {
                #expect(Self.same(sent[key], value), "\(command): \(key) in \(request.text)")
            }
            #expect(request.descriptors.isEmpty)
            server.reset()
        }
    }

    @Test("add-net fd=, add-device fd= and restore net_fds= send the descriptors as SCM_RIGHTS and keep their numbers out of the body")
    func descriptorsTravel() throws {
        let server = try RecordingServer()
        defer { server.stop() }
        let event = try EventFD()
        let net = try Self.run(["--api-socket", server.path, "add-net", "fd=[3,4],mac=52:54:00:12:34:56"], descriptor: (event.rawValue, [3, 4]))
        #expect(net.status == 0, "\(net.stderr)")
        let device = try Self.run(["--api-socket", server.path, "add-device", "fd=3,id=vfio0"], descriptor: (event.rawValue, [3]))
        #expect(device.status == 0, "\(device.stderr)")
        let restore = try Self.run(["--api-socket", server.path, "restore", "source_url=file:///s,net_fds=[net1@[3,4],net2@[5]]"],
                                   descriptor: (event.rawValue, [3, 4, 5]))
        #expect(restore.status == 0, "\(restore.stderr)")
        let requests = server.requests
        guard requests.count == 3 else {
            Issue.record("\(requests.count) requests arrived: \(net.stderr) \(device.stderr) \(restore.stderr)")
            return
        }
        #expect(requests.map(\.path) == ["/api/v1/vm.add-net", "/api/v1/vm.add-device", "/api/v1/vm.restore"])
        #expect(requests.map(\.descriptors) == [Array(repeating: "anon_inode:[eventfd]", count: 2), ["anon_inode:[eventfd]"],
                                                 Array(repeating: "anon_inode:[eventfd]", count: 3)])
        let netBody = Self.object(requests[0].body)
        #expect(netBody["fds"] == nil && netBody["num_queues"] as? Int == 4, "\(requests[0].text)")
        #expect(netBody["mac"] as? String == "52:54:00:12:34:56")
        #expect(Self.object(requests[1].body)["fd"] == nil, "\(requests[1].text)")
        #expect(requests[2].text == #"{"source_url":"file:///s","prefault":false,"memory_restore_mode":"Copy","net_fds":[{"id":"net1","num_fds":2,"fds":null},{"id":"net2","num_fds":1,"fds":null}],"resume":false}"#)
    }

    @Test("add-net fd= hands open descriptors to the VMM's NIC through the real server")
    func addNetDescriptorsReachTheControl() throws {
        let control = try fake(in: .created)
        try withServer(control: control) { _, path throws in
            let event = try EventFD()
            let result = try Self.run(["--api-socket", path, "add-net", "fd=[3,4],id=net7"], descriptor: (event.rawValue, [3, 4]))
            #expect(result.status == 0, "\(result.stderr)")
            let snapshot = control.snapshot
            // fake(in:) created the VM without descriptors; then add-net came with two, both open.
            #expect(snapshot.descriptors.map(\.call) == ["create", "addNet"])
            #expect(snapshot.descriptors.map(\.open) == [[], [true, true]])
            let nic = snapshot.config?.net?.last
            #expect(nic?.id == "net7")
            #expect(nic?.fds?.count == 2 && nic?.fds?.allSatisfy { $0 >= 0 } == true)
            #expect(nic?.numQueues == 4)
        }
    }

    @Test("add-disk, add-net, resize and remove-device act on the VMM through the real server")
    func devicesThroughTheServer() throws {
        let control = try fake(in: .created)
        try withServer(control: control) { _, path throws in
            let socket = ["--api-socket", path]
            let disk = try Self.run(socket + ["add-disk", "path=/img/a.raw,readonly=on,id=disk9"])
            #expect(disk.status == 0, "\(disk.stderr)")
            #expect(control.snapshot.config?.disks?.last == (try DiskConfig.parse("path=/img/a.raw,readonly=on,id=disk9")))
            let net = try Self.run(socket + ["add-net", "tap=chtap0,mac=52:54:00:12:34:56,id=net1"])
            #expect(net.status == 0, "\(net.stderr)")
            #expect(control.snapshot.config?.net?.last == (try NetConfig.parse("tap=chtap0,mac=52:54:00:12:34:56,id=net1")))
            let vsock = try Self.run(socket + ["add-vsock", "cid=3,socket=/tmp/v.sock"])
            #expect(vsock.status == 0, "\(vsock.stderr)")
            #expect(control.snapshot.config?.vsock == (try VsockConfig.parse("cid=3,socket=/tmp/v.sock")))
            let removeVsock = try Self.run(socket + ["remove-device", "_vsock0"])
            #expect(removeVsock.status == 0, "\(removeVsock.stderr)")
            #expect(control.snapshot.config?.vsock == nil)
            let resize = try Self.run(socket + ["resize", "--cpus", "1"])
            #expect(resize.status == 0, "\(resize.stderr)")
            let remove = try Self.run(socket + ["remove-device", "disk9"])
            #expect(remove.status == 0, "\(remove.stderr)")
            #expect(control.snapshot.config?.disks?.isEmpty ?? true)
            #expect(control.snapshot.calls.suffix(6) == ["addDisk", "addNet", "addVsock", "removeDevice", "resize", "removeDevice"])

            // On a running VM the server answers the new device's PCI address, printed as sent.
            try control.boot()
            let hotplugged = try Self.run(socket + ["add-disk", "path=/img/b.raw"])
            #expect(hotplugged.status == 0, "\(hotplugged.stderr)")
            #expect(try JSONDecoder().decode(PciDeviceInfo.self, from: Data(hotplugged.stdout.utf8)).bdf.hasPrefix("0000:00:"))
        }
    }

    @Test("actions and devices this VMM lacks: the server's status, reason and words reach standard error, status 1")
    func absentActionsPassThrough() throws {
        let control = try fake(in: .running)
        try withServer(control: control) { _, path throws in
            let socket = ["--api-socket", path]
            let unsupported: [(arguments: [String], endpoint: String)] = [
                (["nmi"], "vm.nmi"),
                (["coredump", "file:///tmp/core"], "vm.coredump"),
                (["resize-zone", "--id", "mem0", "--size", "1G"], "vm.resize-zone"),
            ]
            for (arguments, endpoint) in unsupported {
                let result = try Self.run(socket + arguments)
                #expect(result.status == 1, "\(arguments)")
                #expect(result.stdout.isEmpty)
                #expect(result.stderr.contains("Server responded with 500 Internal Server Error"), "\(arguments): \(result.stderr)")
                #expect(result.stderr.contains("\(endpoint) is not supported by this VMM yet"), "\(arguments): \(result.stderr)")
            }
            // Live migration is carried out now: the (fake) control takes the request.
            #expect(try Self.run(socket + ["send-migration", "destination_url=unix:/tmp/sock"]).status == 0)
            let absent: [(arguments: [String], feature: String)] = [
                (["add-vdpa", "path=/dev/vhost-vdpa-0"], "vDPA devices"),
                (["add-device", "path=/sys/bus/pci/devices/0000:01:00.0/"], "VFIO device assignment"),
                (["add-user-device", "socket=/tmp/user.sock"], "vfio-user devices"),
                (["add-generic-vhost-user", "socket=/tmp/g.sock,queue_sizes=[256],device_type=9p"], "generic vhost-user devices"),
                (["resize", "--cpus", "4"], "max_vcpus"),  // not absent, but above the VM's max_vcpus (1): 400 too
            ]
            for (arguments, feature) in absent {
                let result = try Self.run(socket + arguments)
                #expect(result.status == 1, "\(arguments)")
                #expect(result.stderr.contains("Server responded with 400 Bad Request"), "\(arguments): \(result.stderr)")
                #expect(result.stderr.contains(feature), "\(arguments): \(result.stderr)")
            }
        }
    }

    @Test("bad syntax is refused before anything is sent, naming the subcommand and the key")
    func badSyntax() throws {
        let server = try RecordingServer()
        defer { server.stop() }
        let cases: [(arguments: [String], mentions: [String])] = [
            (["add-disk", "path=/img,readonly=maybe"], ["add-disk", "disk syntax", "readonly"]),
            (["add-disk", "path=/img,colour=red"], ["add-disk", "colour"]),
            (["add-net", "tap=chtap0,num_queues=three"], ["add-net", "network syntax", "num_queues"]),
            (["add-net", "fd=[3,x]"], ["add-net", "fd="]),
            (["add-fs", "tag=myfs,sockett=/x"], ["add-fs", "filesystem syntax", "sockett"]),
            (["add-pmem", "file=/x,size=lots"], ["add-pmem", "persistent memory syntax", "size"]),
            (["add-vsock", "cid=three,socket=/x"], ["add-vsock", "vsock syntax", "cid"]),
            (["add-vdpa", "path=/dev/v,num_queues=-1"], ["add-vdpa", "vDPA device syntax", "num_queues"]),
            (["add-device", "path=/sys/x,x_nv_gpudirect_clique=999"], ["add-device", "device syntax", "x_nv_gpudirect_clique"]),
            (["add-user-device", "id=u0"], ["add-user-device", "user device syntax", "socket"]),
            (["add-generic-vhost-user", "socket=/x,queue_sizes=[256],device_type=toaster"],
             ["add-generic-vhost-user", "generic vhost-user syntax", "device_type"]),
            (["resize", "--cpus", "two"], ["resize", "CPU count", "--cpus"]),
            (["resize", "--memory", "3g"], ["resize", "memory size", "--memory"]),
            (["resize", "--balloon", "1T"], ["resize", "balloon size", "--balloon"]),
            (["resize", "--memory", "99999999999G"], ["resize", "--memory"]),
            (["resize-disk", "--disk", "_disk0", "--size", "big"], ["resize-disk", "Invalid disk size", "--size"]),
            (["resize-zone", "--id", "mem0", "--size", "1.5G"], ["resize-zone", "memory size", "--size"]),
            (["restore", "prefault=on"], ["restore", "source_url"]),
            (["restore", "source_url=file:///s,prefault=maybe"], ["restore", "prefault"]),
            (["restore", "source_url=file:///s,memory_restore_mode=lazy"], ["restore", "memory_restore_mode"]),
            (["restore", "source_url=file:///s,net_fds=net1@3"], ["restore", "net_fds"]),
            (["restore", "source_url=file:///s,speed=fast"], ["restore", "speed"]),
            (["send-migration", "unix:/tmp/sock"], ["send-migration", "unix:/tmp/sock"]),
            (["send-migration", "local=on"], ["send-migration", "destination_url"]),
            (["send-migration", "destination_url=file:///tmp/x"], ["send-migration", "destination_url must use tcp:<host>:<port> or unix:<path>"]),
            (["send-migration", "destination_url=tcp:192.168.1.1"], ["send-migration", "Missing TCP port"]),
            (["send-migration", "destination_url=tcp:host:99999"], ["send-migration", "Invalid TCP port"]),
            (["send-migration", "destination_url=tcp:host:1,local=on"], ["send-migration", "local option is only supported with UNIX sockets"]),
            (["send-migration", "destination_url=tcp:host:1,connections=129"], ["send-migration", "connections must not exceed 128"]),
            (["send-migration", "destination_url=unix:/s,connections=2"], ["send-migration", "connections"]),
            (["send-migration", "destination_url=tcp:host:1,downtime_ms=0"], ["send-migration", "downtime_ms must be non-zero"]),
            (["send-migration", "destination_url=tcp:host:1,timeout_strategy=panic"], ["send-migration", "timeout_strategy"]),
            (["send-migration", "destination_url=unix:/s,local=on,memory_mode=postcopy"], ["send-migration", "postcopy"]),
            (["send-migration", "destination_url=tcp:host:1,tls_dir=/nonexistent/tls"], ["send-migration", "tls_dir", "/nonexistent/tls"]),
            (["receive-migration", "memory_mode=postcopy"], ["receive-migration", "receiver_url"]),
            (["receive-migration", "receiver_url=unix:/s,tls_dir=/tmp"], ["receive-migration", "UNIX sockets and TLS"]),
            (["receive-migration", "receiver_url=tcp:[::1]"], ["receive-migration", "Missing port separator"]),
            (["receive-migration", "receiver_url=unix:/s,memory_mode=sideways"], ["receive-migration", "memory_mode"]),
            (["add-net", "fd=999"], ["add-net", "fd=999", "not a descriptor open in ch-remote"]),
            (["add-device", "fd=998"], ["add-device", "fd=998", "not a descriptor open"]),
            (["restore", "source_url=file:///s,net_fds=[net1@[997]]"], ["restore", "net_fds=997"]),
        ]
        for (arguments, mentions) in cases {
            let result = try Self.run(["--api-socket", server.path] + arguments)
            #expect(result.status == 1, "\(arguments): \(result.stderr)")
            #expect(result.stdout.isEmpty, "\(arguments)")
            for word in mentions {
                #expect(result.stderr.contains(word), "\(arguments): '\(word)' not in \(result.stderr)")
            }
        }
        #expect(server.requests.isEmpty, "\(server.requests.map(\.path))")

        // Missing arguments and options are usage errors, naming what is missing.
        let usage: [(arguments: [String], mentions: String)] = [
            (["add-disk"], "disk_config"), (["add-net"], "net_config"), (["remove-device"], "id"), (["snapshot"], "snapshot_config"),
            (["restore"], "restore_config"), (["coredump"], "coredump_config"), (["send-migration"], "send_migration_config"),
            (["receive-migration"], "receive_migration_config"), (["resize-disk", "--size", "1G"], "--disk"),
            (["resize-disk", "--disk", "d"], "--size"), (["resize-zone", "--size", "1G"], "--id"), (["frobnicate"], "frobnicate"),
            ([], "subcommand"),
        ]
        for (arguments, mentions) in usage {
            let result = try Self.run(["--api-socket", server.path] + arguments)
            #expect(result.status != 0, "\(arguments)")
            #expect(result.stderr.contains(mentions), "\(arguments): \(result.stderr)")
        }
        #expect(server.requests.isEmpty)
    }

    @Test("send-migration and receive-migration take tls_dir= when it holds the certificate files")
    func tlsDirectories() throws {
        let server = try RecordingServer()
        defer { server.stop() }
        let folder = (server.path as NSString).deletingLastPathComponent + "/tls"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        for name in ["ca-cert.pem", "client-cert.pem", "client-key.pem"] {
            try "pem".write(toFile: folder + "/" + name, atomically: true, encoding: .utf8)
        }
        let send = try Self.run(["--api-socket", server.path, "send-migration", "destination_url=tcp:dst.example:9000,tls_dir=\(folder)"])
        #expect(send.status == 0, "\(send.stderr)")
        #expect(server.requests.first?.text ==
                #"{"destination_url":"tcp:dst.example:9000","local":false,"downtime_ms":300,"timeout_s":3600,"timeout_strategy":"Cancel","connections":1,"tls_dir":"\#(folder)","memory_mode":"Precopy"}"#)
        // The receiving side needs the server's certificate and key, which are not there.
        let receive = try Self.run(["--api-socket", server.path, "receive-migration", "receiver_url=tcp:0.0.0.0:9000,tls_dir=\(folder)"])
        #expect(receive.status == 1)
        #expect(receive.stderr.contains("Missing required TLS file for migration server: \(folder)/server-cert.pem"), "\(receive.stderr)")
        #expect(server.requests.count == 1)
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

    @Test("the D-Bus options of Cloud Hypervisor's dbus_api build are refused by name")
    func dbusRefused() throws {
        for arguments in [["--dbus-service-name", "org.cloudhypervisor.DBusApi1", "--dbus-object-path", "/org/cloudhypervisor/DBusApi1"],
                          ["--dbus-system-bus"], ["--api-socket", "/tmp/x.sock", "--dbus-object-path", "/o"]] {
            let result = try Self.run(arguments + ["ping"])
            #expect(result.status == 1, "\(arguments)")
            #expect(result.stderr.contains(arguments.first { $0.hasPrefix("--dbus") } ?? "?"), "\(result.stderr)")
            #expect(result.stderr.contains("no D-Bus client"), "\(result.stderr)")
        }
    }
}

/// A server that records each request's method, path, body and passed descriptors, and answers
/// every one with 204 No Content: what a ch-remote sends, before any VMM interprets it.
final class RecordingServer: @unchecked Sendable {
    struct Request {
        var method: String
        var path: String
        var headers: [String: String]
        var body: [UInt8]
        /// What each passed descriptor is (`anon_inode:[eventfd]`), as /proc/self/fd shows it.
        var descriptors: [String]

        var text: String { String(decoding: body, as: UTF8.self) }
        var hasContentLength: Bool { headers["content-length"] != nil }
        var contentType: String? { headers["content-type"] }
    }

    let path: String
    private let listener: UnixSocket
    private let lock = NSLock()
    private var recorded: [Request] = []
    private var stopping = false
    private let finished = DispatchSemaphore(value: 0)

    init() throws {
        path = temporarySocketPath("recorder")
        listener = try UnixSocket.listening(at: path)
        let thread = Thread { [self] in
            serve()
            finished.signal()
        }
        thread.start()
    }

    /// The requests so far.
    var requests: [Request] { lock.withLock { recorded } }

    /// Forgets the requests so far.
    func reset() { lock.withLock { recorded = [] } }

    /// Stops serving and removes the socket's folder.
    func stop() {
        lock.withLock { stopping = true }
        finished.wait()
        try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent)
    }

    private func serve() {
        while !lock.withLock({ stopping }) {
            guard (try? listener.wait(for: .readable, timeoutMilliseconds: 20)) == true, let connection = try? listener.accept() else { continue }
            if let request = Self.read(connection) { lock.withLock { recorded.append(request) } }
            try? connection.sendAll(Array("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n".utf8))
        }
    }

    /// Reads one complete request (headers and Content-Length bytes of body).
    private static func read(_ connection: UnixSocket) -> Request? {
        var bytes: [UInt8] = []
        var descriptors: [OwnedFileDescriptor] = []
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if let request = parse(bytes, descriptors) { return request }
            guard (try? connection.wait(for: .readable, timeoutMilliseconds: 100)) == true,
                  let message = try? connection.receive() else { continue }
            if message.isEndOfStream { return nil }
            bytes += message.bytes
            descriptors += message.descriptors
        }
        return nil
    }

    private static func parse(_ bytes: [UInt8], _ descriptors: [OwnedFileDescriptor]) -> Request? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard bytes.count >= 4, let end = (0...(bytes.count - 4)).first(where: { bytes[$0..<($0 + 4)].elementsEqual(separator) }) else {
            return nil
        }
        let lines = String(decoding: bytes[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let requestLine = lines[0].split(separator: " ")
        guard requestLine.count == 3 else { return nil }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let length = headers["content-length"].flatMap { Int($0) } ?? 0
        guard bytes.count >= end + 4 + length else { return nil }
        let kinds = descriptors.map { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0.rawValue)")) ?? "closed" }
        return Request(method: String(requestLine[0]), path: String(requestLine[1]), headers: headers,
                       body: Array(bytes[(end + 4)..<(end + 4 + length)]), descriptors: kinds)
    }
}
