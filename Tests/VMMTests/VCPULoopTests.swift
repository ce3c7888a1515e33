import DeviceModel
import HostSystem
import Hypervisor
import Logging
import Synchronization
import Testing
@testable import VMM

/// A vCPU that replays scripted exits, with their data in a buffer of its own.
final class ScriptedVCPU: VirtualCPU, @unchecked Sendable {
    enum Step { case ioOut(UInt16, UInt64, Int), ioIn(UInt16, Int), mmioRead(UInt64, Int), mmioWrite(UInt64, UInt64, Int), exit(VCPUExit) }
    let id: UInt32 = 0
    private var steps: [Step]
    private let buffer = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 8)
    /// Values the VMM stored for `in`/MMIO reads, in order.
    var readValues: [UInt64] = []
    private var pendingRead: ExitData?
    struct NoKick: VCPUKicker { func kick() {} }
    var kicker: any VCPUKicker { NoKick() }

    init(_ steps: [Step]) { self.steps = steps }
    deinit { buffer.deallocate() }

    func run() throws(HypervisorError) -> VCPUExit {
        if let pendingRead { readValues.append(pendingRead.value) }
        pendingRead = nil
        guard !steps.isEmpty else { return .systemEvent(.shutdown) }
        switch steps.removeFirst() {
        case .ioOut(let port, let value, let size):
            let data = ExitData(storage: buffer, size: size)
            data.set(value)
            return .ioOut(port: port, data: data)
        case .ioIn(let port, let size):
            let data = ExitData(storage: buffer, size: size)
            pendingRead = data
            return .ioIn(port: port, data: data)
        case .mmioRead(let address, let size):
            let data = ExitData(storage: buffer, size: size)
            pendingRead = data
            return .mmioRead(address: address, data: data)
        case .mmioWrite(let address, let value, let size):
            let data = ExitData(storage: buffer, size: size)
            data.set(value)
            return .mmioWrite(address: address, data: data)
        case .exit(let exit):
            return exit
        }
    }
}

/// A device remembering writes and answering reads with a fixed value.
final class RecordingDevice: BusDevice, @unchecked Sendable {
    var writes: [(UInt64, Int, UInt64)] = []
    let answer: UInt64
    init(answer: UInt64) { self.answer = answer }
    func read(offset: UInt64, size: Int) -> UInt64 { answer }
    func write(offset: UInt64, size: Int, value: UInt64) { writes.append((offset, size, value)) }
}

@Suite("The vCPU loop")
struct VCPULoopTests {
    func makeLoop(_ steps: [ScriptedVCPU.Step]) throws -> (VCPULoop, ScriptedVCPU, RecordingDevice, RecordingDevice, ExitSignal) {
        let vcpu = ScriptedVCPU(steps)
        let pio = Bus(name: "pio")
        let mmio = Bus(name: "mmio")
        let port = RecordingDevice(answer: 0x5A)
        let mmioDevice = RecordingDevice(answer: 0x1234_5678)
        try pio.insert(port, base: 0x3F8, length: 8)
        try mmio.insert(mmioDevice, base: 0xD000_0000, length: 0x1000)
        let exits = try ExitSignal()
        return (VCPULoop(vcpu: vcpu, pio: pio, mmio: mmio, exits: exits, logger: Logger(label: "test")), vcpu, port, mmioDevice, exits)
    }

    @Test("Port and MMIO exits reach the devices at their offsets; reads return device values or all ones")
    func dispatch() throws {
        let (loop, vcpu, port, mmioDevice, exits) = try makeLoop([
            .ioOut(0x3F9, 0x41, 1), .ioIn(0x3FD, 1), .ioIn(0x2F8, 1),
            .mmioWrite(0xD000_0010, 0xBEEF, 2), .mmioRead(0xD000_0020, 4), .mmioRead(0xE000_0000, 4),
            .exit(.systemEvent(.shutdown)),
        ])
        loop.run()
        #expect(port.writes.count == 1 && port.writes[0].0 == 1 && port.writes[0].2 == 0x41)
        #expect(mmioDevice.writes.count == 1 && mmioDevice.writes[0].0 == 0x10 && mmioDevice.writes[0].2 == 0xBEEF)
        #expect(vcpu.readValues == [0x5A, 0xFF, 0x1234_5678, 0xFFFF_FFFF], "unmapped reads return all ones")
        #expect(exits.current == .shutdown)
    }

    @Test("Power events become exit reasons", arguments: [
        (VCPUExit.systemEvent(.reset), VMExitReason.reset),
        (VCPUExit.shutdown, VMExitReason.reset),
        (VCPUExit.systemEvent(.shutdown), VMExitReason.shutdown),
    ])
    func powerEvents(exit: VCPUExit, reason: VMExitReason) throws {
        let (loop, _, _, _, exits) = try makeLoop([.exit(exit)])
        loop.run()
        #expect(exits.current == reason)
    }

    @Test("A KVM internal error stops the VM with a failure that says what happened")
    func internalError() throws {
        let (loop, _, _, _, exits) = try makeLoop([.exit(.internalError(InternalError(suberror: 1, data: [])))])
        loop.run()
        guard case .failure(let text)? = exits.current else { Issue.record("expected a failure"); return }
        #expect(text.contains("emulation failure"))
    }

    @Test("The first reported reason wins")
    func firstReasonWins() throws {
        let exits = try ExitSignal()
        exits.report(.reset)
        exits.report(.shutdown)
        #expect(exits.wait() == .reset)
    }
}
