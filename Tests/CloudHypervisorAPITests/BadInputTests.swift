import CloudHypervisorAPI
import CloudHypervisorAPITesting
import Foundation
import Testing
import VMM

/// Bad requests get a 4xx with a JSON message and never reach the VMM; the server keeps serving.
@Suite("API bad input")
struct BadInputTests {
    @Test("wrong method: 400 naming the method the endpoint takes (Cloud Hypervisor answers 400, not 405)")
    func wrongMethod() throws {
        let control = FakeVMMControl()
        try withServer(control: control) { _, path throws in
            for (method, endpoint, allowed) in [("GET", "vm.boot", "PUT"), ("PUT", "vm.info", "GET"), ("POST", "vm.create", "PUT"),
                                                ("DELETE", "vmm.ping", "GET"), ("PATCH", "vm.add-disk", "PUT")] {
                let response = try send(path, method, endpoint)
                #expect(response.status == 400)
                #expect(messages(response) == ["Bad Request", "\(endpoint) takes \(allowed), not \(method)"])
            }
            #expect(control.snapshot.calls.isEmpty)
            #expect(try send(path, "GET", "vmm.ping").status == 200)
        }
    }

    @Test("unknown paths: 404 with a message", arguments: ["/", "/api/v1/", "/api/v1/vm.nothing", "/api/v2/vm.info", "/vm.info", "/api/v1/vm.info/x"])
    func unknownPath(uri: String) throws {
        try withServer { _, path throws in
            let response = try send(path, "GET", uri)
            #expect(response.status == 404)
            #expect(messages(response).first == "Not Found")
        }
    }

    @Test("a query string is ignored")
    func query() throws {
        try withServer { _, path throws in
            #expect(try send(path, "GET", "/api/v1/vmm.ping?verbose=1").status == 200)
        }
    }

    static let badBodies: [(body: String, mentions: String)] = [
        ("{", "not valid JSON"),
        ("not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ("42", "must be a JSON object"),
        (#"{"payload":{"kernel":"/k"},"platform":{"num_pci_segments":1,"iommu_segments":[0]}}"#, "Device is on an IOMMU PCI segment (0) but not placed behind IOMMU"),
        (#"{"payload":{"kernel":"/k"},"disks":[{"vhost_user":true,"vhost_socket":"/s","iommu":true}],"memory":{"size":33554432,"shared":true}}"#, "Device does not support being placed behind IOMMU"),
        (#"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":1,"max_vcpus":1,"kvm_hyperv":true}}"#, "field 'cpus.kvm_hyperv' asks for"),
        (#"{"payload":{"kernel":"/k"},"disks":[{"path":"/d","vhost_user":true,"vhost_socket":"/s"}]}"#, "Disk path and vhost socket both provided"),
        (#"{"payload":{"kernel":"/k"},"platform":{"num_pci_segments":0}}"#, "Number of PCI segments (0) not in range of 1 to 96"),
        (#"{"payload":{"kernel":"/k"},"disks":[{"path":"/d","pci_segment":1}]}"#, "Invalid PCI segment id: 1"),
        (#"{"vsock":{"cid":"three","socket":"/tmp/v"}}"#, "field 'vsock.cid'"),
        (#"{"cpus":{"boot_vcpus":"two","max_vcpus":2}}"#, "field 'cpus.boot_vcpus': expected an integer from 0 to 4294967295"),
        (#"{"cpus":{"boot_vcpus":4294967296,"max_vcpus":1}}"#, "field 'cpus.boot_vcpus': 4294967296 does not fit"),
        (#"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":255,"max_vcpus":255}}"#, "max=255 is above the 254 vCPUs"),
        (#"{"cpus":{"boot_vcpus":-1,"max_vcpus":1}}"#, "field 'cpus.boot_vcpus': -1 does not fit"),
        (#"{"memory":{"size":1.5}}"#, "field 'memory.size': 1.5 is not a whole number"),
        (#"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":1.0,"max_vcpus":1}}"#, "field 'cpus.boot_vcpus': 1.0 is written with a fraction or an exponent"),
        (#"{"payload":{"kernel":"/k"},"memory":{"size":5e8}}"#, "field 'memory.size': 500000000.0 is written with a fraction or an exponent"),
        (#"{"payload":{"kernel":"/k"},"net":[{"mac":null}]}"#, "field 'net[0].mac'"),
        (#"{"payload":{"kernel":"/k"},"disks":[{"path":"/d","rate_limiter_config":{"x":1}}]}"#, "unknown field 'x'"),
        (#"{"payload":{"kernel":"/k"},"disks":[{"path":"/d","num_queues":9223372036854775808}]}"#, "num_queues=9223372036854775807 is out of range"),
        (#"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":1,"max_vcpus":1,"topology":{"threads_per_core":3144,"cores_per_die":1,"dies_per_package":1,"packages":1}}}"#, "topology"),
        (#"{"memory":{"size":"1G"}}"#, "field 'memory.size'"),
        (#"{"memory":{}}"#, "field 'memory.size': required field is missing"),
        (#"{"payload":{"kernel":"/k"},"serial":{"mode":"Socket"}}"#, "socket mode needs a path"),
        (#"{"serial":{"mode":"Telnet"}}"#, "field 'serial.mode'"),
        (#"{"payload":{"kernel":42}}"#, "field 'payload.kernel': expected a string"),
        (#"{"payload":[]}"#, "field 'payload'"),
        (#"{"payload":{"kernel":"/k"},"memory":{"size":4096}}"#, "--memory: size=4096 is too small"),
        (#"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":2,"max_vcpus":1}}"#, "max must be at least boot"),
        (#"{"cpus":{"boot_vcpus":1,"max_vcpus":1}}"#, "no kernel to boot"),
        (#"{"payload":{"kernel":"/k","firmware":"/f"}}"#, "field 'payload.firmware' asks for firmware boot, an absent feature"),
        (#"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":1,"max_vcpus":1,"core_scheduling":null}}"#, "field 'cpus.core_scheduling'"),
        (#"{"payload":{"kernel":"/k"},"disks":[{"path":"/d","image_type":null}]}"#, "field 'disks[0].image_type'"),
    ]

    @Test("vm.create refuses bad bodies with 400 naming the field, and creates nothing", arguments: badBodies.indices)
    func badCreateBody(index: Int) throws {
        let (body, mention) = Self.badBodies[index]
        let control = FakeVMMControl()
        try withServer(control: control) { _, path throws in
            let response = try send(path, "PUT", "vm.create", body: body)
            #expect(response.status == 400, "\(body) → \(response.text)")
            #expect(response.text.contains(mention), "\(body) → \(response.text)")
            #expect(control.state == nil)
            #expect(control.snapshot.calls.isEmpty)
        }
    }

    @Test("an unknown field whose value is null is accepted (it decodes as absent)")
    func nullField() throws {
        try withServer { _, path throws in
            let body = #"{"payload":{"kernel":"/k","firmware":null},"memory":{"size":33554432,"hugepage_size":null}}"#
            #expect(try send(path, "PUT", "vm.create", body: body).status == 204)
        }
    }

    @Test("unknown fields are ignored, as Cloud Hypervisor's serde decoding ignores them; defaults of absent features are accepted")
    func unknownFieldsIgnored() throws {
        let control = FakeVMMControl()
        try withServer(control: control) { _, path throws in
            let body = #"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":2,"max_vcpus":4,"nested":true,"future_knob":7},"memory":{"size":33554432,"hotplug_method":"Acpi","hotplug_size":1073741824},"iommu":false,"watchdog":false,"pvpanic":false,"landlock_enable":false,"platform":{"num_pci_segments":1,"tdx":false,"sev_snp":false},"serial":{"mode":"Tty","iommu":false},"console":{"mode":"Off"},"brand_new_section":{"x":1.5,"y":[2e9]}}"#
            let response = try send(path, "PUT", "vm.create", body: body)
            #expect(response.status == 204, "\(response.text)")
            #expect(control.snapshot.config?.cpus.maxVCPUs == 4)
            #expect(control.snapshot.config?.memory.hotplugSize == 1 << 30)
        }
    }

    @Test("libvirt 9.0's pre-payload body (top-level kernel, cmdline, initramfs) is accepted as the payload")
    func legacyPayload() throws {
        let control = FakeVMMControl()
        try withServer(control: control) { _, path throws in
            let body = #"{"cpus":{"boot_vcpus":2,"max_vcpus":2},"memory":{"size":536870912},"kernel":{"path":"/k"},"cmdline":{"args":"console=hvc0"},"initramfs":{"path":"/i"},"console":{"mode":"Pty"},"serial":{"mode":"Null"}}"#
            let response = try send(path, "PUT", "vm.create", body: body)
            #expect(response.status == 204, "\(response.text)")
            #expect(control.snapshot.config?.payload == PayloadConfig(kernel: "/k", cmdline: "console=hvc0", initramfs: "/i"))
            // With `payload` given, the older fields are unknown keys, ignored as Cloud Hypervisor does.
            #expect(try send(path, "PUT", "vm.delete").status == 204)
            let both = #"{"payload":{"kernel":"/k"},"kernel":{"path":"/other"}}"#
            #expect(try send(path, "PUT", "vm.create", body: both).status == 204)
            #expect(control.snapshot.config?.payload?.kernel == "/k")
        }
    }

    @Test("vm.create without a body: 400")
    func createWithoutBody() throws {
        try withServer { _, path throws in
            let response = try send(path, "PUT", "vm.create")
            #expect(response.status == 400)
            #expect(messages(response).last == "vm.create needs a JSON body (VmConfig)")
        }
    }

    @Test("vm.resize-disk to a size no file can have (2^63 and above): 400 naming desired_size, found by the API fuzz")
    func resizeDiskBeyondFileSizes() throws {
        let control = try fake(in: .running)
        try withServer(control: control) { _, path throws in
            let response = try send(path, "PUT", "vm.resize-disk", body: #"{"id":"_disk0","desired_size":9223372036854775808}"#)
            #expect(response.status == 400)
            #expect(response.text.contains("desired_size 9223372036854775808 is above the largest size"), "\(response.text)")
        }
    }

    @Test("a body on an action that takes none: 400, and the action does not run")
    func bodyOnBodilessAction() throws {
        let control = try fake(in: .running)
        try withServer(control: control) { _, path throws in
            let response = try send(path, "PUT", "vm.pause", body: "{}")
            #expect(response.status == 400)
            #expect(messages(response).last == "vm.pause takes no body; send it with Content-Length: 0 or none")
            #expect(control.state == .running)
            // An explicitly empty body is no body.
            #expect(try send(path, "PUT", "vm.pause", body: "").status == 204)
        }
    }

    @Test("oversized bodies: 400 and the connection closes; the server keeps serving")
    func oversized() throws {
        var configuration = APIServer.Configuration()
        configuration.maxBodySize = 4096
        try withServer(configuration: configuration) { _, path throws in
            // Announced by Content-Length: refused before the body arrives.
            let client = try APIClient(socketPath: path)
            let head = "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
            let answers = try client.exchange(Array(head.utf8), expecting: 1)
            #expect(answers.first?.status == 400)
            #expect(answers.first.map(messages)?.last == "the body is larger than the 4096 bytes this server accepts")
            #expect(answers.first?.header("Connection") == "close")
            #expect(client.waitForClose())
            // Chunked, so only counting finds it.
            let chunked = try APIClient(socketPath: path)
            var raw = "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            for _ in 0..<5 { raw += "400\r\n" + String(repeating: " ", count: 1024) + "\r\n" }
            raw += "0\r\n\r\n"
            #expect(try chunked.exchange(Array(raw.utf8), expecting: 1).first?.status == 400)
            #expect(try send(path, "GET", "vmm.ping").status == 200)
        }
    }

    @Test("a chunked vm.create body is accepted")
    func chunkedBody() throws {
        let control = FakeVMMControl()
        try withServer(control: control) { _, path throws in
            let body = Array(validConfigJSON.utf8)
            let half = body.count / 2
            var raw = "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            raw += String(half, radix: 16) + "\r\n" + String(decoding: body[..<half], as: UTF8.self) + "\r\n"
            raw += String(body.count - half, radix: 16) + "\r\n" + String(decoding: body[half...], as: UTF8.self) + "\r\n0\r\n\r\n"
            let client = try APIClient(socketPath: path)
            #expect(try client.exchange(Array(raw.utf8), expecting: 1).first?.status == 204)
            #expect(control.state == .created)
        }
    }

    @Test("Expect: 100-continue gets an interim 100 before the answer")
    func expectContinue() throws {
        try withServer { _, path throws in
            let client = try APIClient(socketPath: path)
            let head = "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: \(validConfigJSON.utf8.count)\r\n\r\n"
            try client.send(Array(head.utf8))
            let answer = try client.exchange(Array(validConfigJSON.utf8), expecting: 1)
            #expect(answer.first?.status == 204)
        }
    }

    @Test("pipelined requests are answered in order on one connection")
    func pipelined() throws {
        let control = FakeVMMControl()
        try withServer(control: control) { _, path throws in
            let client = try APIClient(socketPath: path)
            let length = validConfigJSON.utf8.count
            var raw = "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: \(length)\r\n\r\n\(validConfigJSON)"
            raw += "PUT /api/v1/vm.boot HTTP/1.1\r\nHost: x\r\n\r\n"
            raw += "GET /api/v1/vm.info HTTP/1.1\r\nHost: x\r\n\r\n"
            raw += "PUT /api/v1/vm.pause HTTP/1.1\r\nHost: x\r\n\r\n"
            raw += "PUT /api/v1/vm.pause HTTP/1.1\r\nHost: x\r\n\r\n"
            raw += "GET /api/v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n"
            raw += "GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n"
            let answers = try client.exchange(Array(raw.utf8), expecting: 7)
            #expect(answers.map(\.status) == [204, 204, 200, 204, 500, 404, 200])
            #expect(answers[2].text.contains(#""state":"Running""#))
        }
    }

    @Test("many pipelined requests (past the queue limit) are all answered")
    func pipelineFlood() throws {
        var configuration = APIServer.Configuration()
        configuration.maxQueuedRequests = 4
        try withServer(configuration: configuration) { _, path throws in
            let client = try APIClient(socketPath: path)
            let raw = String(repeating: "GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n", count: 200)
            let answers = try client.exchange(Array(raw.utf8), expecting: 200)
            #expect(answers.count == 200)
            #expect(answers.allSatisfy { $0.status == 200 })
        }
    }

    @Test("malformed HTTP: 400 with a message, then close", arguments: [
        "GARBAGE\r\n\r\n",
        "GET /api/v1/vmm.ping HTTP/9.9\r\n\r\n",
        "PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        "GET /api/v1/vmm.ping HTTP/1.1\r\nBad Header Line\r\n\r\n",
        "PUT /api/v1/vm.create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
    ])
    func malformed(raw: String) throws {
        try withServer { _, path throws in
            let client = try APIClient(socketPath: path)
            let answers = try client.exchange(Array(raw.utf8), expecting: 1)
            #expect(answers.first?.status == 400, "\(raw.debugDescription)")
            #expect(answers.first.map(messages)?.first == "Bad Request")
            #expect(client.waitForClose())
            #expect(try send(path, "GET", "vmm.ping").status == 200)
        }
    }

    @Test("huge headers are refused, not buffered forever")
    func hugeHeaders() throws {
        try withServer { _, path throws in
            let client = try APIClient(socketPath: path)
            let raw = "GET /api/v1/vmm.ping HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: 200_000) + "\r\n\r\n"
            // The server answers and closes once the headers pass its limit, possibly while the
            // rest is still being written: a broken pipe on this side is part of the refusal.
            try? client.send(Array(raw.utf8))
            let answers = try client.exchange([], expecting: 1)
            #expect(answers.first?.status == 400)
        }
    }

    @Test("a client that stops mid-request (slowloris) gets 408 and is closed; idle connections are closed quietly")
    func slowClient() throws {
        var configuration = APIServer.Configuration()
        configuration.requestTimeout = .milliseconds(300)
        try withServer(configuration: configuration) { _, path throws in
            let partialHeaders = try APIClient(socketPath: path)
            try partialHeaders.send(Array("GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n".utf8))
            let first = try partialHeaders.exchange([], expecting: 1)
            #expect(first.first?.status == 408)
            #expect(first.first.map(messages)?.first == "Request Timeout")
            #expect(partialHeaders.waitForClose())

            let partialBody = try APIClient(socketPath: path)
            try partialBody.send(Array("PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"cpus\"".utf8))
            #expect(try partialBody.exchange([], expecting: 1).first?.status == 408)

            let idle = try APIClient(socketPath: path)
            #expect(try idle.request("GET", "/api/v1/vmm.ping").status == 200)
            #expect(idle.waitForClose(within: .seconds(3)))
            #expect(try idle.exchange([], expecting: 1).isEmpty)

            #expect(try send(path, "GET", "vmm.ping").status == 200)
        }
    }

    @Test("a client that half-closes after its request still gets the answer")
    func halfClose() throws {
        try withServer { _, path throws in
            let client = try APIClient(socketPath: path)
            try client.send(Array("GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            client.shutdownOutput()
            let answers = try client.exchange([], expecting: 1)
            #expect(answers.first?.status == 200)
            #expect(client.waitForClose())
        }
    }

    @Test("Connection: close and HTTP/1.0 requests close after the answer")
    func connectionClose() throws {
        try withServer { _, path throws in
            for raw in ["GET /api/v1/vmm.ping HTTP/1.1\r\nConnection: close\r\n\r\n", "GET /api/v1/vmm.ping HTTP/1.0\r\n\r\n"] {
                let client = try APIClient(socketPath: path)
                let answers = try client.exchange(Array(raw.utf8), expecting: 1)
                #expect(answers.first?.status == 200)
                #expect(answers.first?.header("Connection") == "close")
                #expect(client.waitForClose())
            }
        }
    }

    @Test("deeply nested and random bodies never crash the server")
    func hostileBodies() throws {
        var generator = SystemRandomNumberGenerator()
        try withServer { _, path throws in
            var bodies = [String(repeating: "[", count: 100_000), String(repeating: "{\"a\":", count: 50_000), "\u{0}\u{1}\u{2}", "{\"cpus\":\u{FFFF}}"]
            for _ in 0..<50 {
                let length = Int.random(in: 1...300, using: &generator)
                bodies.append(String((0..<length).map { _ in Character(Unicode.Scalar(UInt8.random(in: 0x20...0x7e, using: &generator))) }))
            }
            for body in bodies {
                let response = try send(path, "PUT", "vm.create", body: body)
                #expect((400..<500).contains(response.status), "\(body.prefix(40)) → \(response.status)")
            }
            #expect(try send(path, "GET", "vmm.ping").status == 200)
        }
    }
}
