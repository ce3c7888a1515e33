import GuestMemory
import HostSystem
import Hypervisor
import Testing
@testable import VMM

/// Cloud Hypervisor's migration wire format against hand-made bytes, and the receiver's state
/// machine against out-of-order and hostile requests (no KVM needed).
@Suite("live migration protocol")
struct MigrationProtocolTests {
    @Test("Requests and responses are 16 little-endian bytes laid out as vm-migration's")
    func requestLayout() throws {
        #expect(MigrationRequest(.config, length: 0x0102).bytes == [2, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0])
        #expect(MigrationRequest.start().bytes == [1, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 8))
        #expect(MigrationResponse(.ok).bytes == [1, 0] + [UInt8](repeating: 0, count: 14))
        #expect(MigrationResponse(.error).bytes == [2, 0] + [UInt8](repeating: 0, count: 14))
        let decoded = try MigrationRequest(decoding: [4, 0, 9, 9, 9, 9, 9, 9, 0x20, 0, 0, 0, 0, 0, 0, 0x80])
        #expect(decoded.command == .memory && decoded.length == 0x8000_0000_0000_0020)
        #expect(throws: MigrationError("received a request with unknown command 10")) {
            try MigrationRequest(decoding: [10, 0] + [UInt8](repeating: 0, count: 14))
        }
        #expect(throws: MigrationError.self) { try MigrationResponse(decoding: [3, 0] + [UInt8](repeating: 0, count: 14)) }
    }

    @Test("Start carries the sender's protocol version in its first two header bytes; another version is refused")
    func protocolVersion() throws {
        #expect(try MigrationRequest(decoding: MigrationRequest.start().bytes).senderVersion() == 0)
        // Residual header bytes after the version are ignored, as Cloud Hypervisor ignores them.
        #expect(try MigrationRequest(decoding: [1, 0, 0, 0, 0xAA, 0xBB, 0xCC, 0xDD] + [UInt8](repeating: 0, count: 8)).senderVersion() == 0)
        let future = try MigrationRequest(decoding: [1, 0, 3, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 8))
        #expect(throws: MigrationError.self) { try future.senderVersion() }
    }

    @Test("Memory range tables are (gpa, length) pairs; a ragged, empty or wrapping range is refused")
    func rangeCodec() throws {
        let table = MemoryRangeTable([MemoryRange(gpa: 0x1000, length: 0x2000), MemoryRange(gpa: 0x1_0000_0000, length: 0x1000)])
        let bytes = MigrationRangeCodec.encode(table)
        #expect(bytes.count == 32)
        #expect(Array(bytes[0..<16]) == [0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0])
        #expect(try MigrationRangeCodec.decode(bytes) == table)
        #expect(throws: MigrationError.self) { try MigrationRangeCodec.decode(Array(bytes.dropLast())) }
        #expect(throws: MigrationError.self) { try MigrationRangeCodec.decode([UInt8](repeating: 0, count: 16)) }
        #expect(throws: MigrationError.self) {
            try MigrationRangeCodec.decode(MigrationRangeCodec.encode(MemoryRangeTable([MemoryRange(gpa: UInt64.max - 10, length: 0x1000)])))
        }
    }

    @Test("Migration URLs: unix:PATH and tcp:HOST:PORT, [IPv6] in brackets; others are refused naming the forms")
    func addresses() throws {
        #expect(try MigrationAddress(url: "unix:/run/ch/mig.sock") == .unix("/run/ch/mig.sock"))
        #expect(try MigrationAddress(url: "tcp:127.0.0.1:6000") == .tcp(host: "127.0.0.1", port: 6000))
        #expect(try MigrationAddress(url: "tcp:[::1]:6000") == .tcp(host: "::1", port: 6000))
        for bad in ["file:///x", "unix:", "tcp:host", "tcp::80", "tcp:host:99999", "tcp:[::1:80"] {
            #expect(throws: MigrationError.self, "\(bad)") { try MigrationAddress(url: bad) }
        }
    }

    @Test("Dirty bitmaps become merged page ranges; populated ranges skip zero pages; taking the dirty ranges clears them")
    func memoryRanges() throws {
        #expect(MemoryRangeTable.ranges(fromBitmap: [0b1011_0000_0111], start: 0x10000, pageSize: 4096, pageCount: 64) == [
            MemoryRange(gpa: 0x10000, length: 3 * 4096), MemoryRange(gpa: 0x10000 + 8 * 4096, length: 2 * 4096),
            MemoryRange(gpa: 0x10000 + 11 * 4096, length: 4096),
        ])
        #expect(MemoryRangeTable.ranges(fromBitmap: [UInt64.max], start: 0, pageSize: 4096, pageCount: 3) == [MemoryRange(gpa: 0, length: 3 * 4096)])
        let memory = try GuestMemory.anonymous([(GuestAddress(0), 64 * 4096), (GuestAddress(0x100000), 16 * 4096)], dirtyTracking: true)
        #expect(memory.populatedRanges().ranges.isEmpty)
        try memory.write(bytes: [1], at: GuestAddress(5 * 4096 + 7))
        try memory.write(bytes: [UInt8](repeating: 2, count: 8192), at: GuestAddress(6 * 4096))
        try memory.write(bytes: [3], at: GuestAddress(0x100000 + 15 * 4096 + 4095))
        let populated = [MemoryRange(gpa: 5 * 4096, length: 3 * 4096), MemoryRange(gpa: 0x100000 + 15 * 4096, length: 4096)]
        #expect(memory.populatedRanges().ranges == populated)
        #expect(memory.takeDirtyRanges().ranges == populated)
        #expect(memory.takeDirtyRanges().ranges.isEmpty)
        #expect(throws: GuestMemoryError.self) { try memory.hostBuffer(for: MemoryRange(gpa: 63 * 4096, length: 2 * 4096)) }
    }

    /// A receiver whose builder must never run (the requests below never reach a valid Config).
    static func receiver() -> MigrationReceiver {
        MigrationReceiver(checksCPUID: false, factory: MigrationMachineFactory(
            memory: { _, _, _ in
                Issue.record("the builder ran")
                throw MigrationError("no machine in this test")
            },
            machine: { _, _, _ in
                Issue.record("the builder ran")
                throw MigrationError("no machine in this test")
            }))
    }

    @Test("The receiver answers requests out of order with Cloud Hypervisor's message and stops on Abandon")
    func receiverOrder() throws {
        let (near, far) = try UnixSocket.pair()
        let channel = MigrationChannel(unix: far)
        _ = near
        let receiver = Self.receiver()
        #expect(throws: MigrationError("Can't handle command Config in current receive state Established")) {
            try receiver.step(MigrationRequest(.config, length: 5), channel)
        }
        try receiver.step(MigrationRequest.start(), channel)
        #expect(receiver.phase == .started)
        #expect(throws: MigrationError("Can't handle command Memory in current receive state Started")) {
            try receiver.step(MigrationRequest(.memory, length: 16), channel)
        }
        #expect(throws: MigrationError("Can't handle command Complete in current receive state Started")) {
            try receiver.step(MigrationRequest(.complete), channel)
        }
        #expect(throws: MigrationError("the sender abandoned the migration")) { try receiver.step(MigrationRequest(.abandon), channel) }
        #expect(throws: MigrationError.self) { try receiver.step(MigrationRequest(.config, length: 1 << 40), channel) }
    }

    @Test("A hostile sender's config is refused with the reason and the receiver answers Error, not a crash")
    func receiverRefusesBadConfig() throws {
        let (near, far) = try UnixSocket.pair()
        let receiving = MigrationChannel(unix: far), sending = MigrationChannel(unix: near)
        let receiver = Self.receiver()
        let garbage = Array("{\"vm_config\": 7}".utf8)
        try sending.send(MigrationRequest.start())
        try sending.send(MigrationRequest(.config, length: UInt64(garbage.count)), payload: garbage)
        #expect(throws: MigrationError.self) { _ = try receiver.run(receiving) }
        #expect(try MigrationResponse(decoding: sending.read(16)).status == .ok, "Start was answered OK")
        #expect(try MigrationResponse(decoding: sending.read(16)).status == .error, "the bad Config was answered Error")
    }

    @Test("The guest's CPU features must be offered by the destination host's KVM")
    func cpuidCheck() throws {
        func leaf(_ function: UInt32, ecx: UInt32 = 0, edx: UInt32 = 0, ebx: UInt32 = 0) -> CPUIDEntry {
            CPUIDEntry(function: function, index: 0, flags: 0, eax: 0, ebx: ebx, ecx: ecx, edx: edx)
        }
        let host = [leaf(1, ecx: 0x0000_0201, edx: 0xFF), leaf(7, ebx: 0x10)]
        try MigrationReceiver.checkCPUID([leaf(1, ecx: 0x0800_0001, edx: 0x0F), leaf(7, ebx: 0x10)], supported: host)
        #expect(throws: MigrationError.self) { try MigrationReceiver.checkCPUID([leaf(7, ebx: 0x30)], supported: host) }
    }

    @Test("A Memory body lands where its table says; a range outside guest memory or a cut stream is refused")
    func memoryBody() throws {
        let body = MigrationReceiveCheck.memoryBody([MemoryRange(gpa: 0x1000, length: 64), MemoryRange(gpa: 0xF_F000, length: 32)], fill: 0xA5)
        let memory = try MigrationReceiveCheck.receiveMemory(tableLength: body.tableLength, stream: body.stream, size: 1 << 20).get()
        #expect(try memory.readBytes(count: 64, at: GuestAddress(0x1000)) == [UInt8](repeating: 0xA5, count: 64))
        #expect(try memory.readBytes(count: 1, at: GuestAddress(0x1040)) == [0])
        let outside = MigrationReceiveCheck.memoryBody([MemoryRange(gpa: 0x10_0000, length: 16)], fill: 1)
        #expect(throws: MigrationError.self) { try MigrationReceiveCheck.receiveMemory(tableLength: outside.tableLength, stream: outside.stream, size: 1 << 20).get() }
        #expect(throws: MigrationError.self) { try MigrationReceiveCheck.receiveMemory(tableLength: body.tableLength, stream: Array(body.stream.dropLast()), size: 1 << 20).get() }
        // A stream that configures a VM is refused at the build, with the reason.
        let config = Array(#"{"vm_config":{"cpus":{"boot_vcpus":1,"max_vcpus":1},"memory":{"size":16777216},"payload":{"kernel":"/k"}},"common_cpuid":[],"memory_manager_data":{"boot_ram":16777216,"current_ram":16777216,"guest_ram_mappings":[],"hotplug_slots":[],"memory_ranges":{"data":[]},"next_hotplug_slot":0,"selected_slot":0}}"#.utf8)
        #expect(MigrationReceiveCheck.receive(MigrationReceiveCheck.streamStart(config: config)).description.contains("no machine"))
        #expect(MigrationReceiveCheck.receive([1, 0]).description.contains("closed"))
        #expect(MigrationReceiveCheck.receive([]).description.contains("closed"), "an empty stream (the fuzzer's first input) is refused, not a crash")
    }
}
