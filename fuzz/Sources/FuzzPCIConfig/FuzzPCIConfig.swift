// fuzz-pci-config: a PCI bus (host bridge at 0, a virtio-pci function at 1) reached the
// ways a guest reaches it: 0xCF8/0xCFC port accesses, ECAM MMIO, and the function's BAR 0
// (common configuration, ISR, device configuration, notifications, MSI-X table and PBA),
// with random sizes and offsets, BAR moves, MSI-X programming and queue chains in memory.
import BlockStorage
import DeviceModel
import FuzzSupport
import PCI
import VirtioDevices

/// Accepts every MSI-X route and delivery.
final class IgnoringRouting: MSIXRouting {
    func update(vector: Int, address: UInt64, data: UInt32, masked: Bool) {}
    func deliver(vector: Int) {}
}

/// Fixed entropy, so crashes replay.
struct ZeroEntropy: EntropySource {
    func randomBytes(count: Int) throws(VirtioDeviceError) -> [UInt8] { [UInt8](repeating: 0, count: count) }
}

@main
enum PCIConfigFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

/// A size as guests and buggy VMM paths produce them: mostly valid, sometimes not.
private func accessSize(_ input: inout FuzzInput) -> Int { input.pick([1, 2, 4, 4, 8, 3, 0]) }

/// A value: raw, small, a queue ring address, or a device status combination.
private func value(_ input: inout FuzzInput) -> UInt64 {
    switch input.byte() % 4 {
    case 0: input.integer(UInt64.self)
    case 1: UInt64(input.byte())
    case 2: input.pick([0, 0x1000, 0x2000, 0xffff_ffff, 0xe000_0000])
    default: UInt64(input.pick([0x01, 0x03, 0x0b, 0x0f, 0x00, 0x80, 0x40]))
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        FuzzGuest.clear()
        let device: any VirtioDevice = input.bool()
            ? VirtioRng(source: ZeroEntropy(), queueSize: 16)
            : VirtioBlock(backend: MemoryBlockBackend(size: 4096), options: .init(queueCount: 2, queueSize: 16))
        guard let transport = try? VirtioPCIDevice(device: device, memory: FuzzGuest.memory, msixRouting: IgnoringRouting(),
                                                   barAddress: 0xe000_0000) else { fatalError("transport refused a valid device") }
        let bus = PCIBus()
        do { try bus.add(transport, at: 1) } catch { fatalError("slot 1 is taken: \(error)") }
        let ports = PCIConfigIO(bus: bus)
        let ecam = PCIConfigMMIO(bus: bus)
        var guest = GuestQueue(&input, index: 0, maxSize: 16)
        while !input.isExhausted {
            switch input.byte() % 10 {
            case 0:  // Select a register through 0xCF8, usually an enabled and plausible one.
                let address = input.bool() ? input.integer(UInt32.self)
                    : 0x8000_0000 | UInt32(input.byte() % 3) << 11 | UInt32(input.byte() & 0xfc)
                ports.write(offset: UInt64(input.byte() % 9), size: accessSize(&input), value: UInt64(address))
            case 1:
                _ = ports.read(offset: UInt64(input.byte() % 9), size: accessSize(&input))
            case 2:
                ports.write(offset: UInt64(input.byte() % 9), size: accessSize(&input), value: value(&input))
            case 3, 4:
                let offset = input.bool() ? UInt64(input.integer(UInt32.self))
                    : PCIConfigMMIO.offset(bus: Int(input.byte() % 2), device: Int(input.byte() % 3), function: Int(input.byte() % 2),
                                           register: input.pick([0x04, 0x10, 0x14, 0x18, 0x34, 0x40, 0x42, 0x50, 0x100])
                                               + Int(input.byte() % 16))
                if input.bool() { ecam.write(offset: offset, size: accessSize(&input), value: value(&input)) } else {
                    _ = ecam.read(offset: offset, size: accessSize(&input))
                }
            case 5, 6:  // BAR 0 through the transport, at a structure's start plus a little, or anywhere.
                let structures: [UInt64] = [0, 0x2000, 0x4000, 0x6000, 0x8000, 0x4_8000]
                let choice = input.int(in: 0...structures.count)
                let base = choice < structures.count ? structures[choice] : UInt64(input.integer(UInt32.self)) % 0x8_0000
                let offset = base + UInt64(input.byte() % 64)
                if input.bool() {
                    transport.writeBAR(index: input.int(in: -1...1), offset: offset, size: accessSize(&input), value: value(&input))
                } else {
                    _ = transport.readBAR(index: input.int(in: -1...1), offset: offset, size: accessSize(&input))
                }
            case 7, 8:
                guest.act(&input)
            default:
                transport.notifyQueue(input.int(in: -1...2))
            }
            fuzzCheck(bus.readConfig(bus: 0, device: 1, function: 0, offset: 0, size: 2) == UInt32(VirtioPCILayout.vendorID),
                      "the virtio function's vendor ID changed")
            fuzzCheck(bus.readConfig(bus: 0, device: 0, function: 0, offset: 0, size: 2) == UInt32(PCIHostBridge.vendorID),
                      "the host bridge's vendor ID changed")
        }
    }
}

/// Port accesses that size BAR 0, ECAM writes that enable MSI-X and memory decoding, and a
/// driver bringing queue 0 up over BAR 0, posting a chain and notifying it.
private func seeds() -> [[UInt8]] {
    var ports = FuzzInputBuilder()
    ports.byte(1)
    ports.queueSetup(sizeLog2: 4)
    ports.append([0, 0, 1, 0x10, 0, 2])  // CF8 <- enable | device 1 | register 0x10, a dword access
    ports.append([2, 4, 2, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])  // CFC <- all ones
    ports.append([1, 4, 2])  // CFC read: the BAR's size mask
    var ecam = FuzzInputBuilder()
    ecam.byte(0)
    ecam.queueSetup(sizeLog2: 4)
    ecam.append([3, 0, 0, 1, 0, 6, 1, 1, 0, 1, 0x80])  // byte 0x43 <- 0x80 (MSI-X enable when the capability sits at 0x40)
    ecam.append([3, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0x06])  // command <- memory space, bus master
    var bar = FuzzInputBuilder()
    bar.byte(1)
    bar.queueSetup(sizeLog2: 4)
    /// A BAR 0 write inside common configuration; `value` is (kind, byte) as `value(_:)` reads it.
    func common(_ offset: UInt8, size: UInt8, _ value: (UInt8, UInt8)) {
        bar.append([5, 0, offset, 1, 1, size, value.0, value.1])
    }
    common(0x14, size: 0, (1, 0x01))
    common(0x14, size: 0, (1, 0x03))
    common(0x08, size: 2, (1, 1))
    common(0x0c, size: 2, (1, 1))  // VERSION_1
    common(0x14, size: 0, (1, 0x0b))
    common(0x16, size: 1, (1, 0))
    common(0x18, size: 1, (1, 16))
    common(0x20, size: 2, (2, 0))
    common(0x28, size: 2, (2, 1))  // 0x1000
    common(0x30, size: 2, (2, 2))  // 0x2000
    common(0x1c, size: 1, (1, 1))
    common(0x14, size: 0, (1, 0x0f))
    bar.byte(7)
    bar.chain(head: 0, [.init(offset: 0, length: 16, writable: true)])
    bar.append([9, 1])
    return [ports.bytes, ecam.bytes, bar.bytes]
}
