// Starts Debian's JMeter 2.13 so that it can load test plans at all.
//
// Debian runs JMeter 2.13 on its XStream 1.4.20, whose security framework
// allows no type by default: every plan fails to load with
// ForbiddenClassException (org.apache.jmeter.save.ScriptWrapper), and
// results cannot be written either. This launcher loads JMeter's
// properties, allows every type in SaveService's two XStream instances
// (JMXSAVER for plans, JTLSAVER for results) and then runs JMeter with the
// arguments given, exactly as `jmeter` would. Plans need nothing of it: a
// stock JMeter 5.x runs them unchanged.

import java.lang.reflect.Field;

import com.thoughtworks.xstream.XStream;
import com.thoughtworks.xstream.security.AnyTypePermission;
import org.apache.jmeter.JMeter;
import org.apache.jmeter.save.SaveService;
import org.apache.jmeter.util.JMeterUtils;

public final class JMeterLauncher {
    private JMeterLauncher() {}

    public static void main(String[] args) throws Exception {
        String home = System.getProperty("jmeter.home", "/usr/share/jmeter");
        JMeterUtils.setJMeterHome(home);
        JMeterUtils.loadJMeterProperties(home + "/bin/jmeter.properties");
        for (String name : new String[] {"JMXSAVER", "JTLSAVER"}) {
            Field field = SaveService.class.getDeclaredField(name);
            field.setAccessible(true);
            ((XStream) field.get(null)).addPermission(AnyTypePermission.ANY);
        }
        new JMeter().start(args);
    }
}
