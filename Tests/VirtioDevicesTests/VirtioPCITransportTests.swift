import GuestMemory
import PCI
import Testing
import VirtioDevices
import VirtioQueue

@Suite struct VirtioPCIIdentityTests {
    @Test func rngIdentity() throws {
        let driver = try Driver()
        let configuration = driver.transport.configuration
        #expect(configuration.vendorID == 0x1af4)
        #expect(configuration.deviceID == 0x1044)
        #expect(configuration.revision == 1)
        #expect(configuration.classCode == .other)
        #expect(configuration.subsystemVendorID == 0x1af4)
        #expect(driver.transport.name == "virtio-rng")
    }

    @Test func netClassAndDeviceID() throws {
        let driver = try Driver(device: FakeNet())
        #expect(driver.transport.configuration.deviceID == 0x1041)
        #expect(driver.transport.configuration.classCode == .ethernet)
        #expect(driver.read(VirtioCommonConfig.numQueues, size: 2) == 2)
        #expect(driver.transport.msix.vectorCount == 3)
    }

    @Test func barZeroIs64BitMemory() throws {
        let driver = try Driver()
        let bars = driver.transport.bars
        #expect(bars.count == 1)
        #expect(bars[0].index == 0)
        #expect(bars[0].kind == .memory64)
        #expect(bars[0].size == 0x8_0000)
        #expect(bars[0].address == Layout.barAddress)
        #expect(driver.transport.notifyAddress(queue: 0) == Layout.barAddress + 0x6000)
        #expect(driver.transport.notifyAddress(queue: 1) == nil)
    }

    @Test func capabilityChain() throws {
        let driver = try Driver()
        let chain = capabilities(of: driver.transport)
        #expect(chain.map(\.id) == [0x11, 0x09, 0x09, 0x09, 0x09])
        let vendor = chain.dropFirst()
        #expect(vendor.map { $0.body[1] } == [1, 3, 4, 2])
        #expect(vendor.map { $0.body[2] } == [0, 0, 0, 0])
        #expect(vendor.map { le32($0.body, 6) } == [0x0000, 0x2000, 0x4000, 0x6000])
        #expect(vendor.map { le32($0.body, 10) } == [0x38, 1, 0x1000, 0x1000])
        #expect(vendor.map { $0.body[0] } == [16, 16, 16, 20])
    }

    @Test func notifyCapabilityMultiplier() throws {
        let driver = try Driver()
        let notify = try #require(capabilities(of: driver.transport).last)
        #expect(le32(notify.body, 14) == 4)
    }

    @Test func msixCapabilityPointsIntoBarZero() throws {
        let driver = try Driver()
        let msix = try #require(capabilities(of: driver.transport).first)
        #expect(UInt16(msix.body[0]) | UInt16(msix.body[1]) << 8 == 1)  // two vectors
        #expect(le32(msix.body, 2) == 0x8000)
        #expect(le32(msix.body, 6) == 0x4_8000)
    }

    @Test func capabilitiesAreReadOnly() throws {
        let driver = try Driver()
        let before = capabilities(of: driver.transport)
        let offset = before[1].offset
        _ = driver.transport.writeConfigRegister(offset / 4 + 1, offset: 0, size: 4, value: 0xdead_beef)
        #expect(capabilities(of: driver.transport)[1].body == before[1].body)
    }

    @Test func unsupportedBARAccessesReadZero() throws {
        let driver = try Driver()
        #expect(driver.transport.readBAR(index: 2, offset: 0, size: 4) == 0)
        #expect(driver.read(0x7_0000, size: 4) == 0)
        #expect(driver.read(VirtioCommonConfig.numQueues, size: 3) == 0)
    }
}

@Suite struct VirtioFeatureNegotiationTests {
    @Test func deviceFeaturesOfferVersion1() throws {
        let driver = try Driver()
        driver.write(VirtioCommonConfig.deviceFeatureSelect, size: 4, 0)
        #expect(driver.read(VirtioCommonConfig.deviceFeature, size: 4) == 0)
        driver.write(VirtioCommonConfig.deviceFeatureSelect, size: 4, 1)
        #expect(driver.read(VirtioCommonConfig.deviceFeature, size: 4) == 1)
        driver.write(VirtioCommonConfig.deviceFeatureSelect, size: 4, 2)
        #expect(driver.read(VirtioCommonConfig.deviceFeature, size: 4) == 0)
    }

    @Test func acceptedSubsetKeepsFeaturesOK() throws {
        let driver = try Driver()
        driver.negotiate()
        #expect(driver.status & VirtioStatus.featuresOK != 0)
        #expect(driver.transport.driverFeatures == VirtioFeature.version1)
    }

    @Test func refusedSupersetClearsFeaturesOK() throws {
        let driver = try Driver()
        driver.negotiate(VirtioFeature.version1 | VirtioFeature.eventIndex)
        #expect(driver.status & VirtioStatus.featuresOK == 0)
        #expect(driver.status == VirtioStatus.acknowledge | VirtioStatus.driver)
    }

    @Test func refusedWithoutVersion1() throws {
        let driver = try Driver()
        driver.negotiate(0)
        #expect(driver.status & VirtioStatus.featuresOK == 0)
    }

    @Test func driverFeaturesFrozenAfterFeaturesOK() throws {
        let driver = try Driver()
        driver.negotiate()
        driver.write(VirtioCommonConfig.driverFeatureSelect, size: 4, 0)
        driver.write(VirtioCommonConfig.driverFeature, size: 4, 0xffff)
        #expect(driver.transport.driverFeatures == VirtioFeature.version1)
    }

    @Test func driverOKWithoutFeaturesOKDoesNotActivate() throws {
        let driver = try Driver()
        driver.setUpQueue()
        driver.setStatus(VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.driverOK)
        #expect(!driver.transport.isActivated)
    }
}

@Suite struct VirtioQueueSetupTests {
    @Test func queueDefaults() throws {
        let driver = try Driver()
        #expect(driver.read(VirtioCommonConfig.numQueues, size: 2) == 1)
        #expect(driver.read(VirtioCommonConfig.queueSize, size: 2) == 256)
        #expect(driver.read(VirtioCommonConfig.queueNotifyOff, size: 2) == 0)
        #expect(driver.read(VirtioCommonConfig.queueMSIXVector, size: 2) == 0xffff)
        #expect(driver.read(VirtioCommonConfig.msixConfig, size: 2) == 0xffff)
        #expect(driver.read(VirtioCommonConfig.queueEnable, size: 2) == 0)
    }

    @Test func queueFieldsRoundTrip() throws {
        let driver = try Driver()
        driver.setUpQueue(descriptors: GuestAddress(0x1_2345_6780))
        #expect(driver.read(VirtioCommonConfig.queueSize, size: 2) == 16)
        #expect(driver.read(VirtioCommonConfig.queueMSIXVector, size: 2) == 1)
        #expect(driver.read(VirtioCommonConfig.queueEnable, size: 2) == 1)
        #expect(driver.read(VirtioCommonConfig.queueDescriptor, size: 4) == 0x2345_6780)
        #expect(driver.read(VirtioCommonConfig.queueDescriptor + 4, size: 4) == 1)
        #expect(driver.read(VirtioCommonConfig.queueDescriptor, size: 8) == 0x1_2345_6780)
        #expect(driver.read(VirtioCommonConfig.queueDriver, size: 4) == Layout.available.rawValue)
        #expect(driver.read(VirtioCommonConfig.queueDevice, size: 4) == Layout.used.rawValue)
    }

    @Test func missingQueueReadsZero() throws {
        let driver = try Driver()
        driver.write(VirtioCommonConfig.queueSelect, size: 2, 5)
        #expect(driver.read(VirtioCommonConfig.queueSelect, size: 2) == 5)
        #expect(driver.read(VirtioCommonConfig.queueSize, size: 2) == 0)
        driver.write(VirtioCommonConfig.queueSize, size: 2, 8)
        #expect(driver.read(VirtioCommonConfig.queueSize, size: 2) == 0)
    }

    @Test func vectorBeyondTableReadsNoVector() throws {
        let driver = try Driver()
        driver.write(VirtioCommonConfig.queueMSIXVector, size: 2, 7)
        #expect(driver.read(VirtioCommonConfig.queueMSIXVector, size: 2) == 0xffff)
        driver.write(VirtioCommonConfig.msixConfig, size: 2, 1)
        #expect(driver.read(VirtioCommonConfig.msixConfig, size: 2) == 1)
    }

    @Test func driverOKActivates() throws {
        let driver = try Driver()
        driver.bringUp()
        #expect(driver.transport.isActivated)
        #expect(driver.status == 0x0f)
        #expect(driver.transport.lastError == nil)
    }

    @Test func queueFrozenAfterActivation() throws {
        let driver = try Driver()
        driver.bringUp()
        driver.write(VirtioCommonConfig.queueSize, size: 2, 4)
        driver.write(VirtioCommonConfig.queueDescriptor, size: 4, 0x8000)
        #expect(driver.read(VirtioCommonConfig.queueSize, size: 2) == 16)
        #expect(driver.read(VirtioCommonConfig.queueDescriptor, size: 4) == Layout.descriptors.rawValue)
    }

    @Test func resetByWritingZero() throws {
        let driver = try Driver()
        driver.bringUp()
        driver.setStatus(0)
        #expect(driver.status == 0)
        #expect(!driver.transport.isActivated)
        #expect(driver.transport.driverFeatures == 0)
        #expect(driver.read(VirtioCommonConfig.queueSize, size: 2) == 256)
        #expect(driver.read(VirtioCommonConfig.queueEnable, size: 2) == 0)
        #expect(driver.read(VirtioCommonConfig.queueMSIXVector, size: 2) == 0xffff)
        #expect(driver.read(VirtioCommonConfig.queueDescriptor, size: 8) == 0)
        // The device works again after a fresh bring-up.
        driver.bringUp()
        #expect(driver.transport.isActivated)
    }
}
