// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pm_probe - guest side of virtio-pm-harness.
 *
 * A virtio driver for virtio-rng devices on virtio-mmio that uses its
 * device inside restore_noirq (when the tree has the noirq virtio PM API):
 * it posts one buffer, kicks, and polls for completion with a bounded
 * busy-wait, then logs the outcome.  A consumer platform device from the
 * same module checks in its resume_early and resume callbacks whether the
 * provider is back, which is what the series under test exists to
 * guarantee.  Every line it logs starts with "virtio_pm_probe: " and is
 * key=value, for the harness's parser.
 */
#include <linux/delay.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/platform_device.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_ring.h>

#ifdef HAVE_VIRTIO_NOIRQ
#define PROBE_NOIRQ 1
#else
#define PROBE_NOIRQ 0
#endif

#define PROBE_BYTES 64

static bool fail_restore_noirq;
module_param(fail_restore_noirq, bool, 0644);
MODULE_PARM_DESC(fail_restore_noirq, "make restore_noirq fail with -EIO (fault injection)");

static bool allow_pci;
module_param(allow_pci, bool, 0644);
MODULE_PARM_DESC(allow_pci, "also bind to virtio-rng on transports other than virtio-mmio");

static unsigned int poll_us = 200000;
module_param(poll_us, uint, 0644);
MODULE_PARM_DESC(poll_us, "bound of the polled request's busy-wait, in microseconds");

struct probe_dev {
	struct virtio_device *vdev;
	struct virtqueue *vq;
	u8 *buf;
	struct mutex lock;	/* serialises sysfs requests */
	bool stuck;		/* a request timed out: a buffer may be in flight */
};

/* The provider the consumer depends on: the first device bound. */
static struct probe_dev *provider;
/* Set when the provider has answered a request since the last freeze. */
static bool provider_ready;

static const char *transport(struct virtio_device *vdev)
{
	return vdev->dev.parent ? dev_name(vdev->dev.parent) : "none";
}

/* One polled request: post a buffer, kick, busy-wait for it (interrupts may be off). */
static int probe_request(struct probe_dev *pd, unsigned int *bytes, s64 *usecs)
{
	struct scatterlist sg;
	ktime_t start = ktime_get();
	unsigned int len;
	int err;

	if (pd->stuck)
		return -EBUSY;
	sg_init_one(&sg, pd->buf, PROBE_BYTES);
	err = virtqueue_add_inbuf(pd->vq, &sg, 1, pd->buf, GFP_ATOMIC);
	if (err)
		return err;
	if (!virtqueue_kick(pd->vq))
		return -EIO;
	while (!virtqueue_get_buf(pd->vq, &len)) {
		if (ktime_us_delta(ktime_get(), start) > poll_us) {
			pd->stuck = true;
			*usecs = ktime_us_delta(ktime_get(), start);
			return -ETIMEDOUT;
		}
		udelay(5);
	}
	*bytes = len;
	*usecs = ktime_us_delta(ktime_get(), start);
	return 0;
}

static void log_request(struct probe_dev *pd, const char *phase, int err, unsigned int bytes, s64 usecs)
{
	pr_info("virtio_pm_probe: %s dev=%s transport=%s request=%s rc=%d bytes=%u usecs=%lld\n",
		phase, dev_name(&pd->vdev->dev), transport(pd->vdev), err ? "failed" : "ok", err, bytes,
		usecs);
}

static ssize_t request_show(struct device *dev, struct device_attribute *attr, char *out)
{
	struct probe_dev *pd = dev_to_virtio(dev)->priv;
	unsigned int bytes = 0;
	s64 usecs = 0;
	int err;

	mutex_lock(&pd->lock);
	err = probe_request(pd, &bytes, &usecs);
	mutex_unlock(&pd->lock);
	log_request(pd, "sysfs", err, bytes, usecs);
	return sysfs_emit(out, "%s rc=%d bytes=%u usecs=%lld\n", err ? "failed" : "ok", err, bytes, usecs);
}
static DEVICE_ATTR_RO(request);

static struct attribute *probe_attrs[] = {
	&dev_attr_request.attr,
	NULL,
};
ATTRIBUTE_GROUPS(probe);

static int probe_init_vq(struct probe_dev *pd)
{
	/* No callback: the device is told not to interrupt, requests are polled. */
	pd->vq = virtio_find_single_vq(pd->vdev, NULL, "probe");
	return PTR_ERR_OR_ZERO(pd->vq);
}

static int probe_probe(struct virtio_device *vdev)
{
	struct probe_dev *pd;
	int err;

	if (!allow_pci && !(vdev->dev.parent && dev_is_platform(vdev->dev.parent)))
		return -ENODEV;

	pd = kzalloc(sizeof(*pd), GFP_KERNEL);
	if (!pd)
		return -ENOMEM;
	pd->buf = kmalloc(PROBE_BYTES, GFP_KERNEL);
	if (!pd->buf) {
		err = -ENOMEM;
		goto free_pd;
	}
	pd->vdev = vdev;
	mutex_init(&pd->lock);
	vdev->priv = pd;
	err = probe_init_vq(pd);
	if (err)
		goto free_buf;
	virtio_device_ready(vdev);
	if (!provider)
		provider = pd;
	/* One request at probe, so that ring indices are not 0 by chance at the first suspend. */
	{
		unsigned int bytes = 0;
		s64 usecs = 0;
		int rc = probe_request(pd, &bytes, &usecs);

		pr_info("virtio_pm_probe: bound dev=%s transport=%s noirq=%d provider=%d request=%s rc=%d\n",
			dev_name(&vdev->dev), transport(vdev), PROBE_NOIRQ, provider == pd,
			rc ? "failed" : "ok", rc);
	}
	return 0;

free_buf:
	kfree(pd->buf);
free_pd:
	kfree(pd);
	return err;
}

static void probe_remove(struct virtio_device *vdev)
{
	struct probe_dev *pd = vdev->priv;

	if (provider == pd)
		provider = NULL;
	virtio_reset_device(vdev);
	vdev->config->del_vqs(vdev);
	kfree(pd->buf);
	kfree(pd);
}

#ifdef CONFIG_PM_SLEEP
static int probe_freeze(struct virtio_device *vdev)
{
	struct probe_dev *pd = vdev->priv;

	if (pd == provider)
		WRITE_ONCE(provider_ready, false);
	pr_info("virtio_pm_probe: freeze dev=%s transport=%s\n", dev_name(&vdev->dev), transport(vdev));
	if (!PROBE_NOIRQ) {
		/* Without the noirq API, restore re-creates the queues (as 6.12 drivers do). */
		virtio_reset_device(vdev);
		vdev->config->del_vqs(vdev);
		pd->vq = NULL;
	}
	return 0;
}

static int probe_restore(struct virtio_device *vdev)
{
	struct probe_dev *pd = vdev->priv;
	u8 status = vdev->config->get_status(vdev);
	unsigned int bytes = 0;
	s64 usecs = 0;
	int err;

	pr_info("virtio_pm_probe: restore dev=%s transport=%s driver_ok_on_entry=%d status=0x%02x noirq=%d\n",
		dev_name(&vdev->dev), transport(vdev), !!(status & VIRTIO_CONFIG_S_DRIVER_OK), status,
		PROBE_NOIRQ);
	if (PROBE_NOIRQ) {
		/* restore_noirq ran and made its request: nothing left to do. */
		if (pd != provider || READ_ONCE(provider_ready))
			return 0;
		/*
		 * The noirq phases did not run (e.g. pm_test=devices): the device
		 * was never reset and is still live.  Show that it works.
		 */
	} else {
		err = probe_init_vq(pd);
		if (err)
			return err;
		virtio_device_ready(vdev);
	}
	err = probe_request(pd, &bytes, &usecs);
	log_request(pd, "restore", err, bytes, usecs);
	if (!err && pd == provider)
		WRITE_ONCE(provider_ready, true);
	return 0;
}

#ifdef HAVE_VIRTIO_NOIRQ
static int probe_freeze_noirq(struct virtio_device *vdev)
{
	pr_info("virtio_pm_probe: freeze_noirq dev=%s transport=%s\n", dev_name(&vdev->dev), transport(vdev));
	return 0;
}

static int probe_restore_noirq(struct virtio_device *vdev)
{
	struct probe_dev *pd = vdev->priv;
	const struct vring *ring = virtqueue_get_vring(pd->vq);
	unsigned int bytes = 0, avail, used;
	s64 usecs = 0;
	int err;

	/*
	 * reset_vqs must hand back a reinitialised ring: a reset device starts
	 * at index 0, so the driver's indices must be 0 too.  A stale ring can
	 * look healthy (the device replays old entries and catches up), so
	 * report the indices and let the harness judge.
	 */
	avail = virtio16_to_cpu(vdev, ring->avail->idx);
	used = virtio16_to_cpu(vdev, ring->used->idx);

	if (fail_restore_noirq) {
		pr_info("virtio_pm_probe: restore_noirq dev=%s transport=%s request=injected-failure rc=%d bytes=0 usecs=0\n",
			dev_name(&vdev->dev), transport(vdev), -EIO);
		return -EIO;
	}
	virtio_device_ready_noirq(vdev);
	err = probe_request(pd, &bytes, &usecs);
	pr_info("virtio_pm_probe: restore_noirq dev=%s transport=%s request=%s rc=%d bytes=%u usecs=%lld ring_avail_at_entry=%u ring_used_at_entry=%u\n",
		dev_name(&vdev->dev), transport(vdev), err ? "failed" : "ok", err, bytes, usecs, avail, used);
	if (!err && pd == provider)
		WRITE_ONCE(provider_ready, true);
	return err;
}
#endif
#endif

static const struct virtio_device_id probe_ids[] = {
	{ VIRTIO_ID_RNG, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

static struct virtio_driver probe_driver = {
	.driver.name = KBUILD_MODNAME,
	.driver.dev_groups = probe_groups,
	.id_table = probe_ids,
	.probe = probe_probe,
	.remove = probe_remove,
#ifdef CONFIG_PM_SLEEP
	.freeze = probe_freeze,
	.restore = probe_restore,
#ifdef HAVE_VIRTIO_NOIRQ
	.freeze_noirq = probe_freeze_noirq,
	.restore_noirq = probe_restore_noirq,
#endif
#endif
};

/* --- the consumer: a platform device whose resume depends on the provider --- */

static int consumer_check(const char *phase)
{
	pr_info("virtio_pm_probe: consumer %s provider=%s\n", phase,
		!provider ? "absent" : READ_ONCE(provider_ready) ? "ready" : "not-ready");
	return 0;
}

static int consumer_suspend(struct device *dev)
{
	return 0;
}

static int consumer_resume_early(struct device *dev)
{
	return consumer_check("resume_early");
}

static int consumer_resume(struct device *dev)
{
	return consumer_check("resume");
}

static const struct dev_pm_ops consumer_pm_ops = {
	SET_LATE_SYSTEM_SLEEP_PM_OPS(consumer_suspend, consumer_resume_early)
	SET_SYSTEM_SLEEP_PM_OPS(consumer_suspend, consumer_resume)
};

static struct platform_driver consumer_driver = {
	.driver = {
		.name = "virtio_pm_consumer",
		.pm = &consumer_pm_ops,
	},
};

static struct platform_device *consumer_dev;

static int __init probe_init(void)
{
	int err;

	err = register_virtio_driver(&probe_driver);
	if (err)
		return err;
	err = platform_driver_register(&consumer_driver);
	if (err)
		goto unregister_virtio;
	/* Registered after the virtio-mmio devices, so it resumes after them in each phase. */
	consumer_dev = platform_device_register_simple("virtio_pm_consumer", -1, NULL, 0);
	if (IS_ERR(consumer_dev)) {
		err = PTR_ERR(consumer_dev);
		goto unregister_platform;
	}
	return 0;

unregister_platform:
	platform_driver_unregister(&consumer_driver);
unregister_virtio:
	unregister_virtio_driver(&probe_driver);
	return err;
}

static void __exit probe_exit(void)
{
	platform_device_unregister(consumer_dev);
	platform_driver_unregister(&consumer_driver);
	unregister_virtio_driver(&probe_driver);
}

module_init(probe_init);
module_exit(probe_exit);
MODULE_DESCRIPTION("virtio-pm-harness guest probe: a virtio device used in restore_noirq, and its consumer");
MODULE_LICENSE("GPL");
