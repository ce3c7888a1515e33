import DeviceModel
import PCI
import Synchronization


/// Records every route update and delivery an MSI-X table makes.
final class RecordingRouting: MSIXRouting {
    struct Update: Equatable {
        var vector: Int
        var address: UInt64
        var data: UInt32
        var masked: Bool
    }

    private let state = Mutex<(updates: [Update], deliveries: [Int])>(([], []))

    var updates: [Update] { state.withLock { $0.updates } }
    var deliveries: [Int] { state.withLock { $0.deliveries } }

    func reset() { state.withLock { $0 = ([], []) } }

    func update(vector: Int, address: UInt64, data: UInt32, masked: Bool) {
        state.withLock { $0.updates.append(Update(vector: vector, address: address, data: data, masked: masked)) }
    }

    func deliver(vector: Int) {
        state.withLock { $0.deliveries.append(vector) }
    }
}

/// Records BAR moves the bus asks for.
final class RecordingRelocation: PCIDeviceRelocation {
    private let moves = Mutex<[(BARReprogram, String)]>([])

    var changes: [BARReprogram] { moves.withLock { $0.map(\.0) } }
    var deviceNames: [String] { moves.withLock { $0.map(\.1) } }

    func moveBAR(_ change: BARReprogram, of device: any PCIDevice) {
        moves.withLock { $0.append((change, device.name)) }
    }
}

/// A test function: a 32-bit register BAR 0, a 64-bit prefetchable BAR 2 holding an
/// 8-vector MSI-X table (at 0) and PBA (at 0x800), an I/O BAR 4, and MSI, MSI-X and
/// vendor-specific capabilities.
final class TestDevice: PCIDevice {
    struct State {
        var configuration: PCIConfiguration
        var msix: MSIXConfiguration
        var scratch: [UInt64] = Array(repeating: 0, count: 512)
        var moves: [BARReprogram] = []
    }

    static let vendorID: UInt16 = 0x1af4
    static let deviceID: UInt16 = 0x1234
    static let pbaOffset: UInt32 = 0x800

    let name: String
    let routing: RecordingRouting
    private let state: Mutex<State>
    let msixOffset: Int
    let msiOffset: Int
    let vendorOffset: Int

    init(name: String = "test-device", extendedSpace: Bool = false) throws {
        self.name = name
        routing = RecordingRouting()
        var configuration = PCIConfiguration(
            vendorID: Self.vendorID, deviceID: Self.deviceID, revision: 2, classCode: .otherMassStorage,
            subsystemVendorID: 0x1af4, subsystemID: 0x0042, interruptPin: 1, extendedSpace: extendedSpace)
        try configuration.addBAR(PCIBAR(index: 0, kind: .memory32, size: 0x1000, address: 0xc000_0000))
        try configuration.addBAR(PCIBAR(index: 2, kind: .memory64, size: 0x1_0000, address: 0x8_0000_0000, prefetchable: true))
        try configuration.addBAR(PCIBAR(index: 4, kind: .io, size: 0x20, address: 0xc040))
        let msix = try MSIXConfiguration(vectors: 8, routing: routing)
        msiOffset = try configuration.addCapability(MSICapability(vectors: 4, is64Bit: true, perVectorMasking: true))
        msixOffset = try configuration.addCapability(msix.capability(tableBAR: 2, tableOffset: 0, pbaBAR: 2, pbaOffset: Self.pbaOffset))
        vendorOffset = try configuration.addCapability(RawPCICapability(id: PCICapabilityID.vendorSpecific, body: [6, 1, 2, 3]))
        state = Mutex(State(configuration: configuration, msix: msix))
    }

    var configuration: PCIConfiguration { state.withLock { $0.configuration } }
    var msix: MSIXConfiguration { state.withLock { $0.msix } }
    var moves: [BARReprogram] { state.withLock { $0.moves } }

    func trigger(vector: Int) -> MSIXTriggerOutcome {
        state.withLock { $0.msix.trigger(vector: vector) }
    }

    func readConfigRegister(_ register: Int) -> UInt32 {
        state.withLock { $0.configuration.readRegister(register) }
    }

    func writeConfigRegister(_ register: Int, offset: Int, size: Int, value: UInt32) -> BARReprogram? {
        state.withLock { state in
            guard register >= 0, register < state.configuration.size / 4 else { return nil }
            let result = state.configuration.write(offset: register * 4 + offset, size: size, value: value)
            if let control = result.msixMessageControl { state.msix.setMessageControl(control) }
            return result.barReprogram
        }
    }

    func readBAR(index: Int, offset: UInt64, size: Int) -> UInt64 {
        state.withLock { state in
            switch index {
            case 0: return offset < 0x1000 ? state.scratch[Int(offset / 8)] : 0
            case 2 where offset >= UInt64(Self.pbaOffset):
                return state.msix.readPBA(offset: offset - UInt64(Self.pbaOffset), size: size)
            case 2: return state.msix.readTable(offset: offset, size: size)
            default: return 0
            }
        }
    }

    func writeBAR(index: Int, offset: UInt64, size: Int, value: UInt64) {
        state.withLock { state in
            switch index {
            case 0 where offset < 0x1000: state.scratch[Int(offset / 8)] = value
            case 2 where offset < UInt64(Self.pbaOffset): state.msix.writeTable(offset: offset, size: size, value: value)
            default: break
            }
        }
    }

    var bars: [PCIBAR] { state.withLock { $0.configuration.bars } }

    func barReprogrammed(_ change: BARReprogram) {
        state.withLock { $0.moves.append(change) }
    }
}

extension PCIConfiguration {
    /// A plain configuration for tests.
    static func sample(extendedSpace: Bool = false) -> PCIConfiguration {
        PCIConfiguration(
            vendorID: 0x1af4, deviceID: 0x1041, revision: 1, classCode: .ethernet,
            subsystemVendorID: 0x1af4, subsystemID: 0x1100, interruptPin: 1, extendedSpace: extendedSpace)
    }

    /// Writes all ones to BAR register `index` and reads it back.
    mutating func sizeBAR(_ index: Int) -> UInt32 {
        let offset = PCIConfiguration.barOffset + index * 4
        let saved = read(offset: offset, size: 4)
        write(offset: offset, size: 4, value: 0xffff_ffff)
        let mask = read(offset: offset, size: 4)
        write(offset: offset, size: 4, value: saved)
        return mask
    }
}
