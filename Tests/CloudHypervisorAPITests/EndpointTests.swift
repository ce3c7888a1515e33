import CloudHypervisorAPI
import CloudHypervisorAPITesting
import Foundation
import Testing
import VMM

/// Every endpoint's success path and the lifecycle state table, over a real Unix socket.
@Suite("API endpoints")
struct EndpointTests {
    @Test("vmm.ping answers 200 with VmmPingResponse")
    func ping() throws {
        try withServer { _, path throws in
            let response = try send(path, "GET", "vmm.ping")
            #expect(response.status == 200)
            #expect(response.header("Content-Type") == "application/json")
            let pong = try JSONDecoder().decode(VMMPingResponse.self, from: Data(response.body))
            #expect(pong.version == "53.0.0" && pong.buildVersion == "v53.0.0-swift.0.2.0")
            #expect(pong.pid == Int64(getpid()))
        }
    }

    @Test("the whole lifecycle: create, boot, info, counters, pause, resume, reboot, power-button, shutdown, boot, delete")
    func lifecycle() throws {
        let control = FakeVMMControl()
        try withServer(control: control) { _, path throws in
            #expect(try send(path, "PUT", "vm.create", body: validConfigJSON).status == 204)
            #expect(control.state == .created)
            let created = try JSONDecoder().decode(VMInfo.self, from: Data(try send(path, "GET", "vm.info").body))
            #expect(created.state == .created)
            #expect(created.config.memory.size == 32 << 20)
            #expect(created.config.payload?.cmdline == "console=ttyS0")
            #expect(try send(path, "PUT", "vm.boot").status == 204)
            #expect(control.state == .running)
            let counters = try send(path, "GET", "vm.counters")
            #expect(counters.status == 200)
            let table = try JSONDecoder().decode([String: [String: UInt64]].self, from: Data(counters.body))
            #expect(table["_rng"]?["read_bytes"] == 4096)
            #expect(try send(path, "PUT", "vm.pause").status == 204)
            #expect(control.state == .paused)
            #expect(try send(path, "PUT", "vm.resume").status == 204)
            #expect(try send(path, "PUT", "vm.reboot").status == 204)
            #expect(try send(path, "PUT", "vm.power-button").status == 204)
            #expect(control.state == .running)
            #expect(try send(path, "PUT", "vm.shutdown").status == 204)
            #expect(control.state == .shutdown)
            #expect(try send(path, "PUT", "vm.boot").status == 204)
            #expect(try send(path, "PUT", "vm.delete").status == 204)
            #expect(control.state == nil)
            #expect(try send(path, "GET", "vm.info").status == 404)
            #expect(control.snapshot.calls == [
                "create", "info", "boot", "counters", "pause", "resume", "reboot", "powerButton", "shutdown", "boot", "delete", "info",
            ])
        }
    }

    @Test("vmm.shutdown answers 200 with no body and reaches the control")
    func shutdownVMM() throws {
        let control = try fake(in: .running)
        try withServer(control: control) { _, path throws in
            let response = try send(path, "PUT", "vmm.shutdown")
            #expect(response.status == 200)
            #expect(response.body.isEmpty)
            #expect(control.snapshot.vmmShutdownRequested)
        }
    }

    /// Cloud Hypervisor's transitions, as the fake follows them: from each state, which actions
    /// succeed (204) and which are refused (404 without a VM, 500 otherwise).
    static let table: [(state: VMState?, action: String, status: Int, after: VMState?)] = [
        (nil, "vm.boot", 404, nil), (nil, "vm.pause", 404, nil), (nil, "vm.resume", 404, nil),
        (nil, "vm.shutdown", 404, nil), (nil, "vm.reboot", 404, nil), (nil, "vm.power-button", 404, nil),
        (nil, "vm.delete", 204, nil),
        (.created, "vm.boot", 204, .running), (.created, "vm.pause", 500, .created), (.created, "vm.resume", 500, .created),
        (.created, "vm.shutdown", 500, .created), (.created, "vm.reboot", 500, .created),
        (.created, "vm.power-button", 500, .created), (.created, "vm.delete", 204, nil),
        (.running, "vm.boot", 500, .running), (.running, "vm.pause", 204, .paused), (.running, "vm.resume", 500, .running),
        (.running, "vm.shutdown", 204, .shutdown), (.running, "vm.reboot", 204, .running),
        (.running, "vm.power-button", 204, .running), (.running, "vm.delete", 204, nil),
        (.paused, "vm.boot", 500, .paused), (.paused, "vm.pause", 500, .paused), (.paused, "vm.resume", 204, .running),
        (.paused, "vm.shutdown", 204, .shutdown), (.paused, "vm.reboot", 204, .running),
        (.paused, "vm.power-button", 500, .paused), (.paused, "vm.delete", 204, nil),
        (.shutdown, "vm.boot", 204, .running), (.shutdown, "vm.pause", 500, .shutdown), (.shutdown, "vm.resume", 500, .shutdown),
        (.shutdown, "vm.shutdown", 500, .shutdown), (.shutdown, "vm.reboot", 500, .shutdown),
        (.shutdown, "vm.power-button", 500, .shutdown), (.shutdown, "vm.delete", 204, nil),
    ]

    @Test("the state-transition table")
    func stateTable() throws {
        for row in Self.table {
            let control = try fake(in: row.state)
            try withServer(control: control) { _, path throws in
                let response = try send(path, "PUT", row.action)
                #expect(response.status == row.status, "\(row.action) from \(String(describing: row.state))")
                #expect(control.state == row.after, "\(row.action) from \(String(describing: row.state))")
                if row.status != 204 {
                    #expect(messages(response).last?.hasPrefix(row.action) == true, "\(response.text)")
                }
            }
        }
    }

    @Test("vm.create twice is refused with 500 (VmAlreadyCreated)")
    func createTwice() throws {
        try withServer(control: try fake(in: .created)) { _, path throws in
            let response = try send(path, "PUT", "vm.create", body: validConfigJSON)
            #expect(response.status == 500)
            #expect(messages(response).last?.contains("already created") == true)
        }
    }

    @Test("vm.info, vm.counters without a VM: 404; counters before boot: 500")
    func readsWithoutVM() throws {
        try withServer { _, path throws in
            #expect(try send(path, "GET", "vm.info").status == 404)
            #expect(try send(path, "GET", "vm.counters").status == 404)
        }
        try withServer(control: try fake(in: .created)) { _, path throws in
            #expect(try send(path, "GET", "vm.counters").status == 500)
        }
    }

    @Test("device, resize, snapshot and migration endpoints answer 500 'not supported' for a well-formed body",
          arguments: APIEndpoint.allCases.filter { if case .unsupported = $0.body { true } else { false } })
    func unsupported(endpoint: APIEndpoint) throws {
        try withServer(control: try fake(in: .running)) { _, path throws in
            let bodies: [APIEndpoint: String] = [
                .vmResizeZone: #"{"id":"mem0","desired_ram":1073741824}"#,
                .vmCoredump: #"{"destination_url":"file:///tmp/core"}"#,
                .vmSendMigration: #"{"destination_url":"unix:/tmp/m.sock","local":true,"downtime_ms":100}"#,
                .vmReceiveMigration: #"{"receiver_url":"unix:/tmp/m.sock"}"#,
            ]
            let response = try send(path, "PUT", endpoint.rawValue, body: bodies[endpoint] ?? "{}")
            #expect(response.status == 500)
            #expect(messages(response) == ["Error from API", "\(endpoint.rawValue): \(endpoint.rawValue) is not supported by this VMM yet"])
            let empty = try send(path, "PUT", endpoint.rawValue)
            #expect(empty.status == 400)
            // A body that does not decode as Cloud Hypervisor decodes it: 400 before the refusal.
            if bodies[endpoint] != nil {
                let bad = try send(path, "PUT", endpoint.rawValue, body: #"{"id":5}"#)
                #expect(bad.status == 400, "\(endpoint): \(bad.text)")
            }
            #expect(messages(empty).last?.contains("needs a JSON body") == true)
            #expect(try send(path, "PUT", endpoint.rawValue, body: "[]").status == 400)
        }
    }

    @Test("vm.snapshot wants a paused VM; vm.restore wants no VM and leaves one paused, or running with resume")
    func snapshotAndRestore() throws {
        let control = try fake(in: .running)
        try withServer(control: control) { _, path throws in
            let body = #"{"destination_url":"file:///tmp/snap"}"#
            let running = try send(path, "PUT", "vm.snapshot", body: body)
            #expect(running.status == 500 && running.text.contains("Running"), "\(running.text)")
            #expect(try send(path, "PUT", "vm.pause").status == 204)
            #expect(try send(path, "PUT", "vm.snapshot", body: body).status == 204)
            #expect(try send(path, "PUT", "vm.snapshot", body: #"{"destination":"x"}"#).status == 400)
            let exists = try send(path, "PUT", "vm.restore", body: #"{"source_url":"file:///tmp/snap"}"#)
            #expect(exists.status == 500 && exists.text.contains("already created"), "\(exists.text)")
            #expect(try send(path, "PUT", "vm.delete").status == 204)
            #expect(try send(path, "PUT", "vm.restore", body: #"{"source_url":"file:///tmp/snap","resume":true}"#).status == 204)
            #expect(control.state == .running)
        }
    }

    @Test("vm.nmi takes no body and is not supported yet")
    func nmi() throws {
        try withServer(control: try fake(in: .running)) { _, path throws in
            #expect(try send(path, "PUT", "vm.nmi").status == 500)
            #expect(try send(path, "PUT", "vm.nmi", body: "{}").status == 400)
        }
    }

    @Test("the ControlError mapping is Cloud Hypervisor's")
    func mapping() {
        #expect(APIError.status(for: .vmNotCreated) == .notFound)
        #expect(APIError.status(for: .vmAlreadyCreated) == .internalServerError)
        #expect(APIError.status(for: .invalidState(action: "vm.pause", state: .created)) == .internalServerError)
        #expect(APIError.status(for: .invalidConfig("x")) == .badRequest)
        #expect(APIError.status(for: .unsupported(action: "vm.add-disk")) == .internalServerError)
        #expect(APIError.status(for: .failed(action: "vm.boot", reason: "x")) == .internalServerError)
    }

    @Test("a slow action does not block the event loop: pings on other connections are answered meanwhile")
    func slowBoot() throws {
        let control = FakeVMMControl(bootDelayMicroseconds: 300_000)
        var configuration = APIServer.Configuration()
        configuration.workerThreads = 2
        try withServer(control: control, configuration: configuration) { _, path throws in
            _ = try send(path, "PUT", "vm.create", body: validConfigJSON)
            let booting = try APIClient(socketPath: path)
            let start = Date()
            try booting.send(Array("PUT /api/v1/vm.boot HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            Thread.sleep(forTimeInterval: 0.05)
            #expect(try send(path, "GET", "vmm.ping").status == 200)
            #expect(Date().timeIntervalSince(start) < 0.25)
            #expect(try booting.exchange([], expecting: 1).first?.status == 204)
        }
    }
}
