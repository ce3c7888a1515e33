import Foundation
import Testing
import VirtioDevices
@testable import VMM

@Suite("virtio-mem memory hotplug: --memory hotplug_method=virtio-mem and vm.resize desired_ram")
struct VirtioMemHotplugTests {
    func parse(_ option: String) throws -> MemoryConfig {
        let config = try #require(try CommandLineCompatibilityTests.config(["--kernel", "k", "--memory", option]))
        try config.validate()
        return config.memory
    }

    @Test func parsesAndValidatesAsCloudHypervisor() throws {
        let memory = try parse("size=512M,hotplug_method=virtio-mem,hotplug_size=1G,hotplugged_size=256M")
        #expect(memory.hotplugMethod == .virtioMem && memory.hotplugSize == 1 << 30 && memory.hotpluggedSize == 256 << 20)
        // The JSON of vm.create / vm.info uses Cloud Hypervisor's names and values.
        let json = String(decoding: try JSONEncoder().encode(memory), as: UTF8.self)
        #expect(json.contains(#""hotplug_method":"VirtioMem""#) && json.contains(#""hotplugged_size":268435456"#))
        let decoded = try JSONDecoder().decode(MemoryConfig.self, from: Data(#"{"size":536870912,"hotplug_method":"VirtioMem","hotplug_size":536870912,"hotplugged_size":134217728}"#.utf8))
        #expect(decoded.hotplugMethod == .virtioMem && decoded.hotpluggedSize == 128 << 20)
        for (option, reason) in [
            ("size=512M,hotplug_method=virtio-mem,hotplugged_size=256M", "no 'hotplug_size'"),
            ("size=512M,hotplug_method=virtio-mem,hotplug_size=256M,hotplugged_size=512M", "can't be bigger than 'hotplug_size'"),
            ("size=512M,hotplug_size=512M,hotplugged_size=256M", "with hotplug method 'acpi'"),
            ("size=512M,hotplug_method=virtio-mem,hotplug_size=100M", "not aligned with 134217728"),
            ("size=512M,hotplug_method=virtio-mem,hotplug_size=0", "can't be 0"),
            ("size=512M,hotplug_method=virtio-mem,hotplug_size=512M,hotplugged_size=3M", "block size"),
        ] {
            let error = #expect(throws: ConfigError.self) { _ = try parse(option) }
            #expect(error?.option == "--memory" && error?.description.contains(reason) == true, "\(option): \(error?.description ?? "")")
        }
    }

    @Test func theRegionFollowsBootRAMAt128MiB() throws {
        var config = MemoryConfig()
        config.size = 512 << 20
        #expect(try VirtioMemSupport.region(config) == nil)
        config.hotplugSize = 512 << 20
        #expect(try VirtioMemSupport.region(config) == nil)  // ACPI keeps its room empty
        config.hotplugMethod = .virtioMem
        #expect(try VirtioMemSupport.region(config)! == (4 << 30, 512 << 20))
        config.size = (4 << 30) + (100 << 20)  // 3 GiB below the hole, 1 GiB + 100 MiB above 4 GiB
        #expect(try VirtioMemSupport.regionStart(bootRAM: config.size) == (5 << 30) + (128 << 20))
    }

    @Test func resizeRulesOnTheDevice() throws {
        let device = try VirtioMem(address: 4 << 30, size: 512 << 20, requested: 0, host: HostBalloonMemory())
        let support = VirtioMemSupport(device: device, bootRAM: 512 << 20)
        try support.resize(to: 1024 << 20)
        #expect(device.configuration.requestedSize == 512 << 20 && support.requestedRAM == 1024 << 20)
        try support.resize(to: 768 << 20)
        #expect(device.configuration.requestedSize == 256 << 20)
        #expect { try support.resize(to: 256 << 20) } throws: { "\($0)".contains("below its boot size") }
        #expect { try support.resize(to: 2048 << 20) } throws: { "\($0)".contains("bigger than region_size") }
        #expect { try support.resize(to: (768 << 20) + 4096) } throws: { "\($0)".contains("not aligned on block_size") }
        #expect { try support.check(768 << 20) } throws: { "\($0)".contains("identical") }
        #expect(device.configuration.requestedSize == 256 << 20)
        try support.resize(to: 512 << 20)
        #expect(device.configuration.requestedSize == 0)
        #expect(VMMController.hotpluggedSize(768 << 20, bootRAM: 512 << 20) == 256 << 20)
        #expect(VMMController.hotpluggedSize(512 << 20, bootRAM: 512 << 20) == nil)
    }
}
